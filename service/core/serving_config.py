"""The serving config (docs/serving-config.md): our YAML/TOML file, TF Serving's
`--model_config_file`, or discovery of every model. A config is validated completely before
anything loads, every problem reported at once by file and key."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from service.core.layout import model_names
from service.core.refill import REFILL_HOLD
from training.jobs import NEEDS_NO_TRAINING

if TYPE_CHECKING:
    from service.settings import Settings

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A model name is a URL segment and a folder name under the model base path (no separators,
no leading dot); `..` is refused separately."""
LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
POLICY_FORMS = "{latest: N}, all, or {specific: [v1, v2, ...]}"


class ServingConfigError(ValueError):
    """A serving config that cannot be used; the message names the file and every bad key."""


class _FileModel(BaseModel):
    """A part of the config file: an unknown (misspelt) key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class VersionPolicy(_FileModel):
    """Which versions on disk are served; in a file `{latest: 2}`, `all` (or `{all: {}}`,
    `{all: true}`) or `{specific: [1, 3]}`, as in TF Serving. `VersionPolicy()` is `latest 1`."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: StrictInt = 1
    versions: tuple[StrictInt, ...] = ()
    """Ascending."""

    @model_validator(mode="before")
    @classmethod
    def _from_file_form(cls, data: Any) -> Any:
        """Translate the file forms into fields; a dict with `kind` is already in field form."""
        if data == "all":
            return {"kind": "all"}
        if not isinstance(data, dict):
            raise ValueError(f"expected {POLICY_FORMS}, got {data!r}")
        if not data or "kind" in data:
            return data
        if len(data) != 1:
            raise ValueError(f"give only one of latest, all, specific (got {', '.join(data)})")
        ((kind, value),) = data.items()
        if kind == "latest":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"latest must be an integer, got {value!r}")
            return {"kind": "latest", "num_versions": value}
        if kind == "all":
            if value not in ({}, True, None):
                raise ValueError(f"all takes no settings (write `all`), got {value!r}")
            return {"kind": "all"}
        if kind == "specific":
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"specific must be a list of integer versions, got {value!r}")
            return {"kind": "specific", "versions": value}
        raise ValueError(f"unknown version policy {kind!r}: expected {POLICY_FORMS}")

    @field_validator("versions")
    @classmethod
    def _ascending(cls, versions: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(versions))

    @model_validator(mode="after")
    def _check(self) -> VersionPolicy:
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"latest must be >= 1, got {self.num_versions}")
        if self.kind == "specific":
            if not self.versions:
                raise ValueError("specific needs at least one version")
            if any(v < 1 for v in self.versions):
                raise ValueError(f"specific versions must be >= 1, got {list(self.versions)}")
            if len(set(self.versions)) != len(self.versions):
                raise ValueError(f"specific lists a version twice: {list(self.versions)}")
        return self

    @model_serializer
    def _to_file_form(self) -> dict[str, Any] | str:
        """Dumped in the file form, so a dumped config loads back unchanged."""
        if self.kind == "latest":
            return {"latest": self.num_versions}
        if self.kind == "specific":
            return {"specific": list(self.versions)}
        return "all"

    def select(self, on_disk: Sequence[int]) -> list[int]:
        """The versions to serve, ascending (a `specific` one not on disk yet is not served)."""
        available = sorted(set(on_disk))
        if self.kind == "latest":
            return available[-self.num_versions :]
        if self.kind == "specific":
            return [v for v in available if v in self.versions]
        return available

    def describe(self) -> str:
        """The file form in words: `latest 2`, `all` or `specific [1, 3]`."""
        form = self._to_file_form()
        return form if isinstance(form, str) else " ".join(f"{k} {v}" for k, v in form.items())


class BatchingConfig(_FileModel):
    """Per-model dynamic batching: queued requests are taken together whenever an instance is
    free, padded to the next allowed size and run as one model call."""

    enabled: bool = True
    """False: one model call per request, still with the queue bound."""
    max_batch_size: int = Field(32, ge=1, le=4096)
    """Rows in one model call; a request with more is split into chunks."""
    max_batch_delay_ms: float = Field(0.0, ge=0, le=10_000)
    """How long a batch that is not full may wait once an instance is free (0: never)."""
    refill: bool = False
    """Under closed-loop load, hold a batch up to `refill_hold` model calls while the clients
    the last batch answered send their next requests (no wait when none are expected back).
    Pays off for models whose call costs much more than its rows (an LSTM on CPU)."""
    refill_hold: float = Field(REFILL_HOLD, gt=0, le=2)
    """With `refill`: the longest hold, in average model calls (0.5: half a call)."""
    allowed_batch_sizes: tuple[int, ...] | None = None
    """Default: 1, 2, 3 and four per doubling (4, 5, 6, 7, 8, 10, 12, ...) below max_batch_size,
    and max_batch_size."""
    max_queue_size: int = Field(256, ge=1)
    """Requests waiting per model version (429 beyond); a split request counts once."""
    max_queue_rows: int | None = Field(None, ge=1)
    """Rows waiting per model version; default max_queue_size * max_batch_size."""
    timeout_ms: float = Field(30_000, gt=0)
    """Default request deadline (X-Request-Timeout overrides it); 504 if still queued at it."""

    @field_validator("allowed_batch_sizes")
    @classmethod
    def _sorted_positive(cls, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if sizes is None:
            return None
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError("allowed_batch_sizes must be a non-empty list of positive sizes")
        return tuple(sorted(set(sizes)))

    @model_validator(mode="after")
    def _check_refill(self) -> BatchingConfig:
        if self.refill_hold != REFILL_HOLD and not self.refill:  # a default is no choice
            raise ValueError("refill_hold applies only with refill: true")
        return self

    @model_validator(mode="after")
    def _check_sizes(self) -> BatchingConfig:
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != self.max_batch_size:
            raise ValueError(
                f"the largest allowed batch size ({self.allowed_batch_sizes[-1]}) must equal "
                f"max_batch_size ({self.max_batch_size})"
            )
        if self.max_queue_rows is not None and self.max_queue_rows < self.max_batch_size:
            raise ValueError(
                f"max_queue_rows ({self.max_queue_rows}) must be at least max_batch_size "
                f"({self.max_batch_size}): the queue must hold one full batch"
            )
        return self

    def queue_rows(self) -> int:
        return self.max_queue_rows or self.max_queue_size * self.max_batch_size

    def batch_sizes(self) -> tuple[int, ...]:
        """The allowed sizes, ascending; the last is max_batch_size. Default: 1, 2, 3, then four
        per doubling (4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ...): padding adds less than a quarter
        of a batch's rows (powers of two alone cost up to twice the compute), and the number of
        sizes to warm grows only with the logarithm of max_batch_size."""
        if self.allowed_batch_sizes:
            return self.allowed_batch_sizes
        limit = self.max_batch_size
        quarters = {m << e for m in (4, 5, 6, 7) for e in range(limit.bit_length())}
        return (*sorted(size for size in {1, 2, 3} | quarters if size < limit), limit)


class PlacementConfig(_FileModel):
    """`instances` copies of the model, spread over the devices `device` picks."""

    device: str = "auto"
    """auto (GPUs for large models when there are any, else the CPU), cpu, gpu, gpu:N, cpu:N."""
    instances: int = Field(1, ge=1, le=64)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        device = device.strip().lower()
        if device in ("auto", "cpu", "gpu") or re.fullmatch(r"(cpu|gpu):\d+", device):
            return device
        raise ValueError(f"device must be auto, cpu, gpu, gpu:N or cpu:N, got {device!r}")


_GRPC_SCHEMES = {"dns", "ipv4", "ipv6", "unix"}
"""gRPC name-resolver schemes a backend target may use."""


class BackendConfig(_FileModel):
    """A remote TF Serving-compatible gRPC endpoint that runs the model; the gateway keeps the
    protocols, task API, batching, metrics and health. Versions and signatures are its own."""

    grpc: str
    """host:port or a gRPC target (`dns:///svc:8500`); batches go round-robin over its
    addresses."""
    model_name: str | None = None
    """The model's name on the backend (default: the same name)."""
    timeout_ms: float = Field(30_000, gt=0)
    """Deadline of one call to the backend (a batch)."""
    assets: Path | None = None
    """A local folder with the model's `assets/labels.txt` (and model card), for the task API."""

    @field_validator("assets")
    @classmethod
    def _absolute_assets(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _in_config_dir(path, info)

    @field_validator("grpc")
    @classmethod
    def _check_address(cls, address: str) -> str:
        scheme, colon, rest = address.partition(":")
        if colon and scheme in _GRPC_SCHEMES:  # a target URI: gRPC's resolver checks the rest
            if not rest.strip("/"):
                raise ValueError(f"{address!r} names no address after {scheme}:")
            return address
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{address!r} is not host:port (e.g. resnet50-serving:8500) or a gRPC target "
                f"({', '.join(s + ':' for s in sorted(_GRPC_SCHEMES))}...)"
            )
        return address


def _in_config_dir(path: Path, info: ValidationInfo) -> Path:
    """A relative path in a file is relative to the file, so a config and its models move
    together (and the working directory does not matter)."""
    config_dir = (info.context or {}).get("config_dir")
    return path if config_dir is None else (Path(config_dir) / path).absolute()


class ModelConfig(_FileModel):
    """One served model: its name (in URLs), where its versions live, and which to serve."""

    name: str
    base_path: Path
    """Holds `<version>/` folders; absolute once loaded. Default: <model_base_path>/<name>;
    given explicitly it may be anywhere (the operator wrote it), as in TF Serving."""
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, StrictInt] = {}
    batching: BatchingConfig = BatchingConfig()
    placement: PlacementConfig = PlacementConfig()
    backend: BackendConfig | None = None
    """Run the model on a remote gRPC backend instead of a local SavedModel."""

    @model_validator(mode="before")
    @classmethod
    def _default_base_path(cls, data: Any, info: ValidationInfo) -> Any:
        base = (info.context or {}).get("model_base_path")
        name = data.get("name") if isinstance(data, dict) else None
        if base is not None and isinstance(name, str) and "base_path" not in data:
            return {**data, "base_path": Path(base).absolute() / name}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not MODEL_NAME.fullmatch(name) or ".." in name:
            raise ValueError(
                f"{name[:140]!r} is not a valid model name (it is used in URLs and as a folder"
                " name): use letters, digits, '_', '.' and '-', starting with a letter or digit,"
                " without '..', at most 128 characters"
            )
        return name

    @field_validator("base_path")
    @classmethod
    def _absolute_base_path(cls, path: Path, info: ValidationInfo) -> Path:
        if str(path) in ("", "."):
            raise ValueError("base_path must not be empty")
        return _in_config_dir(path, info).absolute()

    @field_validator("version_policy", mode="before")
    @classmethod
    def _no_empty_policy(cls, value: Any) -> Any:
        # `VersionPolicy()` is latest 1, but an empty policy in a file is more likely a mistake.
        if value == {}:
            raise ValueError(f"empty version policy: expected {POLICY_FORMS}")
        return value

    @field_validator("version_labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, int]) -> dict[str, int]:
        for label, version in labels.items():
            if not LABEL_NAME.fullmatch(label):
                raise ValueError(
                    f"{label!r} is not a valid label name: use letters, digits, '_' and '-',"
                    " starting with a letter"
                )
            if version < 1:
                raise ValueError(f"label {label!r}: version must be >= 1, got {version}")
        return labels

    @model_validator(mode="after")
    def _labels_within_policy(self) -> ModelConfig:
        """A label on a version a `specific` policy never serves could never resolve."""
        policy = self.version_policy
        for label, version in self.version_labels.items():
            if policy.kind == "specific" and version not in policy.versions:
                raise ValueError(
                    f"version_labels: {label!r} points to version {version}, which the"
                    f" version policy ({policy.describe()}) never serves"
                )
        return self


class ServingConfig(_FileModel):
    models: list[ModelConfig]
    source: str
    """Where the config came from (for status and logs), e.g. "models/serving.yaml"."""

    @field_validator("models", mode="before")
    @classmethod
    def _not_empty(cls, models: Any) -> Any:
        if isinstance(models, list) and not models:
            raise ValueError("no models: list at least one")
        return models

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        first: dict[str, int] = {}
        for index, model in enumerate(models):
            if model.name in first:
                raise ValueError(
                    f"duplicate model name {model.name!r}"
                    f" (models[{first[model.name]}] and models[{index}])"
                )
            first[model.name] = index
        return models

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def load_serving_config(path: Path, model_base_path: Path) -> ServingConfig:
    """Read our YAML (.yaml/.yml) or TOML (.toml) serving config; models without `base_path`
    live under `model_base_path`."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ServingConfigError(f"{path}: unknown config format {suffix!r} (use .yaml or .toml)")
    text = _read(path)
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.load(text, _UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark, during = exc.problem_mark, exc.context
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if during and exc.context_mark:
            during += f" at line {exc.context_mark.line + 1}"
        what = ": ".join(str(part) for part in (during, exc.problem) if part)
        raise ServingConfigError(f"{path}: {where}invalid YAML: {what}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ServingConfigError(f"{path}: invalid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ServingConfigError(f"{path}: expected a mapping with a `models` list, got {data!r}")
    if "source" in data:  # a field of ServingConfig, but not a key of the file
        raise ServingConfigError(f"{path}: source: unknown key (the file has one key, `models`)")
    context = {"config_dir": path.absolute().parent, "model_base_path": model_base_path}
    return _validate({**data, "source": str(path)}, str(path), context)


def discover_serving_config(
    model_base_path: Path, exportable: Collection[str] = ()
) -> ServingConfig:
    """No config file: every model in the repository at `latest 1`, as TF Serving does, and
    the `exportable` ones (the server exports them: `service.core.auto_export`) even without
    a version, as long as the repository folder exists."""
    names = model_names(model_base_path)
    if model_base_path.is_dir():
        names = sorted({*names, *exportable})
    if not names:
        raise ServingConfigError(
            f"{model_base_path}: no models found (expected <name>/<version>/saved_model.pb;"
            " create one with `modelserve train digits`)"
        )
    data = {
        "models": [{"name": name} for name in names],
        "source": f"every model under {model_base_path} (no config file)",
    }
    return _validate(data, str(model_base_path), {"model_base_path": model_base_path})


def load_tfserving_model_config(path: Path) -> ServingConfig:
    """Read TF Serving's `--model_config_file` (text-format ModelServerConfig), refusing what
    we cannot honour rather than serve something different from what was asked."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(_read(path), config)
    except text_format.ParseError as exc:
        message = re.sub(r"^\d+:\d+ : ", "", str(exc))  # the position, said once below
        raise ServingConfigError(
            f"{path}: line {exc.GetLine()}, column {exc.GetColumn()}: {message}"
        ) from None
    if config.HasField("custom_model_config"):
        raise ServingConfigError(f"{path}: custom_model_config is not supported")
    if not config.HasField("model_config_list"):
        raise ServingConfigError(f"{path}: expected a model_config_list")
    problems: list[str] = []
    models: list[dict[str, Any]] = []
    for index, model in enumerate(config.model_config_list.config):
        where = f"{path}: model_config_list.config[{index}]"
        if model.model_platform not in ("", "tensorflow"):
            problems.append(
                f"{where}.model_platform: only 'tensorflow' is supported,"
                f" got {model.model_platform!r}"
            )
        if model.model_type == model_server_config_pb2.OTHER:
            problems.append(f"{where}.model_type: only TENSORFLOW is supported")
        if model.HasField("logging_config"):
            problems.append(f"{where}.logging_config: request logging is not supported")
        entry: dict[str, Any] = {"name": model.name, "version_labels": dict(model.version_labels)}
        if model.base_path:
            entry["base_path"] = model.base_path
        policy = model.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            entry["version_policy"] = "all"
        elif choice == "specific":
            entry["version_policy"] = {"specific": list(policy.specific.versions)}
        else:  # TF Serving's default, and its reading of num_versions 0: the newest one
            entry["version_policy"] = {"latest": policy.latest.num_versions or 1}
        models.append(entry)
    data = {"models": models, "source": f"{path} (TF Serving model_config_list)"}
    context = {"config_dir": path.absolute().parent}
    return _validate(data, str(path), context, "model_config_list.config", problems)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServingConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServingConfigError(f"{path}: cannot read: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a config should say which one it meant."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _validate(
    data: dict[str, Any],
    label: str,
    context: dict[str, Any],
    list_name: str = "models",
    problems: Sequence[str] = (),
) -> ServingConfig:
    """Validate, raising pydantic's errors and earlier `problems` as one ServingConfigError, so
    a user fixes everything in one round."""
    try:
        config = ServingConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems = [*problems, *(_describe(error, label, list_name) for error in exc.errors())]
    if problems:
        raise ServingConfigError("\n".join(problems))
    return config


def _describe(error: ErrorDetails, label: str, list_name: str) -> str:
    """`<file>: models[1].version_policy: latest must be >= 1`, without pydantic's URLs."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    message: str = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "extra_forbidden":
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = (
            f"unknown key (did you mean {close[0]!r}?)"
            if close
            else f"unknown key (allowed: {', '.join(allowed)})"
        )
    path = ""
    for index, part in enumerate(loc):
        name = list_name if (index, part) == (0, "models") else part
        path += f"[{name}]" if isinstance(name, int) else f".{name}" if path else name
    return f"{label}: {path}: {message}" if path else f"{label}: {message}"


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys a file may use at `loc` (for unknown-key hints)."""
    cls: type[BaseModel] = ServingConfig
    for part in loc:
        if isinstance(part, str):
            field = cls.model_fields.get(part)
            annotation = field.annotation if field else None
            nested = [t for t in (annotation, *typing.get_args(annotation)) if _is_model(t)]
            if not nested:
                return []
            cls = nested[0]
    return [name for name in cls.model_fields if not (cls is ServingConfig and name == "source")]


def _is_model(annotation: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def serving_config_for(settings: Settings) -> ServingConfig:
    """The serving config file when one is given, else every model under the base path."""
    if settings.config is not None:
        return load_serving_config(settings.config, settings.model_base_path)
    if settings.model_config_file is not None:
        return load_tfserving_model_config(settings.model_config_file)
    exportable = NEEDS_NO_TRAINING if settings.auto_export else ()
    return discover_serving_config(settings.model_base_path, exportable)
