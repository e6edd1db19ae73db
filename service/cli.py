"""The `modelserve` command line: train models, list the repository, serve."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar, get_args, get_origin

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service import __version__
from service.core.layout import existing_versions, model_names, read_model_card
from service.settings import Settings
from training.jobs import JOBS, train_function

if TYPE_CHECKING:
    from service.core.serving_config import ServingConfig

# TensorFlow's C++ start-up chatter hides the output people came for (the user's value wins).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    help="modelserve: train TensorFlow models and serve them (TF Serving REST/gRPC, V2, task API).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # long paths and URLs are not cut at 80
Command = TypeVar("Command", bound=Callable[..., None])

# training.jobs imports no TensorFlow until a job runs; built from JOBS, so mypy sees no members.
JobName = StrEnum("JobName", {name: name for name in (*JOBS, "all")})  # type: ignore[misc]


# Settings `serve` offers as options (the others are environment variables only).
SERVE_OPTIONS = (
    *("host", "port", "grpc_port", "model_base_path", "config", "model_config_file"),
    *("log_level", "log_format", "poll_interval_seconds", "allow_random_weights"),
    *("auto_export", "resnet50_weights"),
    *("api_keys_file", "tls_cert_file", "tls_key_file", "tls_ca_file", "workers"),
)
FLAG_ALIASES = {"poll_interval_seconds": ("--poll-interval",)}  # earlier flag names


def settings_options(*names: str) -> Callable[[Command], Command]:
    """Give `command(**options)` one option per Settings field in `names`: flag, help, default
    and variable come from the field (a yes/no setting gets `--name/--no-name`). An option not
    given is None, so Settings resolves it from MODELSERVE_* or its default; Settings alone
    parses the strings typed (typer never reads the variable: the help only names it)."""

    def option(name: str) -> inspect.Parameter:
        field = Settings.model_fields[name]
        flag = field.annotation is bool
        env = Settings.model_config["env_prefix"] + name.upper()
        lines = [field.description or "", f"[env var: {env}]"]
        if flag:  # typer's own default is None: not shown
            lines.append(f"[default: {'on' if field.default else 'off'}]")
        elif field.default is not None:
            lines.append(f"[default: {field.default}]")
        flag_name = "--" + name.replace("_", "-")
        info = typer.Option(
            f"{flag_name}/--no-{flag_name[2:]}" if flag else flag_name,
            *FLAG_ALIASES.get(name, ()),
            help=escape("\n\n".join(lines)),  # paragraphs; escaped: rich markup reads [ ]
            metavar="" if flag else _metavar(field.annotation),
            show_default=False,
        )
        return inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[bool | None if flag else str | None, info],
        )

    def decorate(command: Command) -> Command:  # typer reads the options from the signature
        signature = inspect.Signature([option(name) for name in names])
        command.__signature__ = signature  # type: ignore[attr-defined]
        return command

    return decorate


def _metavar(annotation: Any) -> str:
    """The value's kind as --help shows it: <int>, <path>, <json|text>."""
    if get_origin(annotation) is Literal:
        return f"<{'|'.join(get_args(annotation))}>"
    kind = next(t for t in (*get_args(annotation), annotation) if t is not type(None))
    return f"<{kind.__name__.lower()}>"


def given_settings(options: dict[str, Any]) -> Settings:
    """Settings from the options given, the others from MODELSERVE_* or their defaults."""
    try:
        return Settings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        _fail(f"invalid setting: {exc}")


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
    cv_repeats: Annotated[
        int | None,
        typer.Option(
            min=1, help="votes only: repeats of its 10-fold cross-validation (default: 5)."
        ),
    ] = None,
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
        cv_repeats=cv_repeats,
        weights=weights,
    )
    names = list(JOBS) if name == "all" else [name.value]
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
        console.print(_format_metrics(read_model_card(exported).get("metrics", {})))
    if failures:
        raise typer.Exit(code=2)


@app.command()
@settings_options("model_base_path")
def models(**options: Any) -> None:
    """List the model repository: names, versions and model-card metrics."""
    base_path = given_settings(options).model_base_path
    names = model_names(base_path)
    if not names:
        _fail(f"no models under {base_path.resolve()}", code=1)
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


@app.command()
@settings_options(*SERVE_OPTIONS)
def serve(**options: Any) -> None:
    """Serve the model repository: TF Serving REST and Open Inference Protocol (V2) on --port.

    Every option can also be set as an environment variable MODELSERVE_<OPTION>
    (e.g. MODELSERVE_MODEL_BASE_PATH); other settings (threads, request size limit) only so.
    """
    from service.auth import ApiKeyError, load_api_keys
    from service.core.serving_config import ServingConfigError

    settings = given_settings(options)
    try:
        load_api_keys(settings.api_keys, settings.api_keys_file)  # before any model loads
    except ApiKeyError as exc:
        _fail(f"invalid setting: {exc}")
    if settings.config and settings.model_config_file:
        _fail("give either --config or --model-config-file, not both")

    if settings.front_end_workers():  # this process supervises: no TensorFlow runtime here
        from service.protos import use_proto_only_tensorflow

        use_proto_only_tensorflow()
    from service.core.serving_config import serving_config_for

    try:
        serving_config = serving_config_for(settings)
    except ServingConfigError as exc:
        _fail(str(exc))
    _print_serving_plan(serving_config, settings)
    _serve(settings, serving_config)


def _serve(settings: Settings, serving_config: ServingConfig) -> None:
    """One process, or the model process and `--workers` front-end processes around it."""
    if settings.front_end_workers():
        from service.processes.supervisor import Supervisor

        supervisor = Supervisor(settings, serving_config)
        supervisor.run()
        if supervisor.failed:
            raise typer.Exit(code=1)
    else:
        from service.http.draining_server import run_server
        from service.server import ModelServer

        run_server(ModelServer(settings, serving_config))


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code=code)


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


def _format_metrics(metrics: dict[str, Any]) -> str:
    """Scalar metrics only; fractions of one read better as percentages."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        shown = f"{value:.2%}" if isinstance(value, float) and 0 <= value <= 1 else f"{value}"
        parts.append(f"{key}={shown}")
    return "\n".join(parts)
