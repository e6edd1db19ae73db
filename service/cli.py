"""The `modelserve` command line: train models, list the repository, serve."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service import __version__
from service.layout import existing_versions, model_names, read_model_card

if TYPE_CHECKING:
    from service.server import ModelServer
    from service.serving_config import ServingConfig
    from service.settings import Settings

# TensorFlow's C++ start-up chatter hides the output people came for; TF_CPP_MIN_LOG_LEVEL
# set by the user still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    help="modelserve: train TensorFlow models and serve them (TF Serving REST/gRPC, V2, task API).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
# soft_wrap: long messages (paths, URLs) are left for the terminal to wrap, not cut at 80.
err_console = Console(stderr=True, soft_wrap=True)

ModelBasePath = Annotated[
    Path,
    typer.Option(
        "--model-base-path",
        envvar="MODELSERVE_MODEL_BASE_PATH",
        help="Model repository: <path>/<name>/<version>/ (TF Serving layout).",
    ),
]


class JobName(StrEnum):
    digits = "digits"
    votes = "votes"
    sentiment = "sentiment"
    resnet50 = "resnet50"
    all = "all"


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"modelserve {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """modelserve: train TensorFlow models and serve them."""


@app.command()
def train(
    name: Annotated[JobName, typer.Argument(help="Which model to train ('all': every job).")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data set file or folder. Default: the data set's file in "
            "$MODELSERVE_DATA_DIR, else the public download (votes and the resnet50 class "
            "index: the copy shipped with modelserve). See docs/data.md."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option(help="Model base path; exports to <output>/<name>/<next version>/.")
    ] = Path("models"),
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (default: per job).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Mini-batch size (default: per job).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Use only the first N examples per split (smoke runs)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1337,
    keep_versions: Annotated[
        int, typer.Option(min=0, help="Versions kept on disk after export; 0 keeps all.")
    ] = 3,
    download: Annotated[
        bool, typer.Option(help="Allow the public download when no local data is found.")
    ] = True,
    weights: Annotated[
        str | None,
        typer.Option(
            help="resnet50 only: 'imagenet' (download, default), a local .h5 path, or 'none' "
            "for random weights."
        ),
    ] = None,
) -> None:
    """Train a model and export it as the next SavedModel version."""
    from training.data import DataNotFoundError
    from training.jobs import JOBS, train_function
    from training.options import TrainOptions

    options = TrainOptions(
        data=data,
        output=output,
        epochs=epochs,
        batch_size=batch_size,
        limit=limit,
        seed=seed,
        keep_versions=keep_versions or None,
        allow_download=download,
        weights=weights,
    )
    names = list(JOBS) if name is JobName.all else [name.value]
    failures = 0
    for job in names:
        console.rule(f"training {job}")
        try:
            exported = train_function(job)(options)
        except DataNotFoundError as exc:
            err_console.print(f"[red]error:[/red] {job}: {escape(str(exc))}")
            failures += 1
            continue
        console.print(f"[green]exported[/green] {exported}")
        _print_metrics(read_model_card(exported))
    if failures:
        raise typer.Exit(code=2)


@app.command()
def models(model_base_path: ModelBasePath = Path("models")) -> None:
    """List the model repository: names, versions and model-card metrics."""
    _print_repository(model_base_path)


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


class LogFormatOption(StrEnum):
    json = "json"
    text = "text"


def _env(flag: str) -> str:
    return "MODELSERVE_" + flag.upper()


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(envvar=_env("host"), help="Interface to listen on (default 0.0.0.0)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(envvar=_env("port"), help="REST port (default 8501).")
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            envvar=_env("grpc_port"),
            help="gRPC port: TF Serving's PredictionService/ModelService (default 8500).",
        ),
    ] = None,
    model_base_path: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("model_base_path"),
            help="Model repository <path>/<name>/<version>/ (default models).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("config"),
            help="Serving config (YAML/TOML): models, version policies, labels. "
            "Default: every model under the base path, newest version.",
        ),
    ] = None,
    model_config_file: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("model_config_file"),
            help="TF Serving's model_config_list text file (instead of --config).",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel | None, typer.Option(envvar=_env("log_level"), help="Log level (default info).")
    ] = None,
    log_format: Annotated[
        LogFormatOption | None,
        typer.Option(
            envvar=_env("log_format"),
            help="json: one JSON object per line (default); text: for a terminal.",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            envvar=_env("poll_interval_seconds"),
            help="Seconds between scans for new/removed versions (default 2); 0: scan once.",
        ),
    ] = None,
    allow_random_weights: Annotated[
        bool,
        typer.Option(
            "--allow-random-weights",
            envvar=_env("allow_random_weights"),
            help="Let /api/v1/images answer from a resnet50 with random weights (load tests "
            "only: its labels are meaningless).",
        ),
    ] = False,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("api_keys_file"),
            help="File of API keys, one a line: REST and gRPC then need a key "
            "(keys can also be given in MODELSERVE_API_KEYS).",
        ),
    ] = None,
    tls_cert_file: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("tls_cert_file"),
            help="PEM certificate: serve HTTPS and gRPC over TLS (with --tls-key-file).",
        ),
    ] = None,
    tls_key_file: Annotated[
        Path | None,
        typer.Option(envvar=_env("tls_key_file"), help="PEM private key of --tls-cert-file."),
    ] = None,
    tls_ca_file: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("tls_ca_file"),
            help="PEM CA certificates: clients must present a certificate they signed (mTLS).",
        ),
    ] = None,
) -> None:
    """Serve the model repository: TF Serving REST and Open Inference Protocol (V2) on --port.

    Every option can also be set as an environment variable MODELSERVE_<OPTION>
    (e.g. MODELSERVE_MODEL_BASE_PATH); other settings (threads, request size limit) only so.
    """
    from pydantic import ValidationError

    from service.auth import ApiKeyError, load_api_keys
    from service.serving_config import ServingConfigError
    from service.settings import Settings

    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "grpc_port": grpc_port,
        "model_base_path": model_base_path,
        "config": config,
        "model_config_file": model_config_file,
        "log_level": log_level.value if log_level else None,
        "log_format": log_format.value if log_format else None,
        "poll_interval_seconds": poll_interval,
        "allow_random_weights": allow_random_weights or None,
        "api_keys_file": api_keys_file,
        "tls_cert_file": tls_cert_file,
        "tls_key_file": tls_key_file,
        "tls_ca_file": tls_ca_file,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
        load_api_keys(settings.api_keys, settings.api_keys_file)  # before any model loads
    except (ValidationError, ApiKeyError) as exc:
        _fail(f"invalid setting: {exc}")
    if settings.config and settings.model_config_file:
        _fail("give either --config or --model-config-file, not both")

    from service.server import ModelServer, serving_config_for

    try:
        serving_config = serving_config_for(settings)
    except ServingConfigError as exc:
        _fail(str(exc))
    _print_serving_plan(serving_config, settings)
    _run_server(ModelServer(settings, serving_config))


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code=2)


def _print_serving_plan(serving_config: ServingConfig, settings: Settings) -> None:
    table = Table(title=f"serving ({serving_config.source})")
    for column in ("model", "base path", "versions", "labels"):
        table.add_column(column)
    for model in serving_config.models:
        labels = ", ".join(f"{k}={v}" for k, v in model.version_labels.items())
        table.add_row(model.name, str(model.base_path), model.version_policy.describe(), labels)
    console.print(table)
    shown_host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    tls = settings.tls_cert_file is not None
    rest = f"{'https' if tls else 'http'}://{shown_host}:{settings.port}"
    console.print(
        f"REST (TF Serving, V2, task API, web page) on {rest}  docs: {rest}/docs\n"
        f"gRPC (TF Serving PredictionService, ModelService, health) on {shown_host}:"
        f"{settings.grpc_port} ({'TLS' if tls else 'plaintext'})"
    )


def _run_server(server: ModelServer) -> None:
    from service.draining_server import CLOSE_GRACE_SECONDS, DrainingServer
    from service.http_limits import uvicorn_config
    from service.logs import configure_logging
    from service.tls import uvicorn_tls_options

    settings = server.settings
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn_config(  # with the header, timeout and connection limits
        server,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's handler and format
        access_log=False,  # modelserve writes its own (service.observer)
        timeout_graceful_shutdown=CLOSE_GRACE_SECONDS,  # after DrainingServer's own drain
        server_header=False,  # no software and version for scanners
        **uvicorn_tls_options(settings),  # HTTPS with tls_cert_file / tls_key_file
    )
    DrainingServer(config, server).run()


def _print_repository(base_path: Path) -> None:
    names = model_names(base_path)
    if not names:
        err_console.print(f"[red]error:[/red] no models under {escape(str(base_path.resolve()))}")
        raise typer.Exit(code=1)
    table = Table(title=f"model repository {base_path.resolve()}")
    table.add_column("model")
    table.add_column("version", justify="right")
    table.add_column("metrics (from the model card)", no_wrap=True)
    table.add_column("created")
    for name in names:
        for version in existing_versions(base_path / name):
            card = read_model_card(base_path / name / str(version))
            metrics = _format_metrics(card.get("metrics", {})) if card else "(no model card)"
            if card.get("weights") == "random":
                metrics = "[red]RANDOM WEIGHTS[/red]\n" + metrics
            table.add_row(name, str(version), metrics, card.get("created", "")[:10])
    console.print(table)


def _format_metrics(metrics: dict[str, Any]) -> str:
    """Scalar metrics only; fractions of one read better as percentages."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        shown = f"{value:.2%}" if isinstance(value, float) and 0 <= value <= 1 else f"{value}"
        parts.append(f"{key}={shown}")
    return "\n".join(parts)


def _print_metrics(card: dict[str, Any]) -> None:
    console.print(_format_metrics(card.get("metrics", {})))
