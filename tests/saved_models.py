"""Tiny SavedModels for gateway tests, built in well under a second each.

Every export lands in `<base>/<name>/<version>/` (TF Serving's layout). It is written to a
hidden temporary folder next to it and renamed into place, so a server polling the
repository never sees a half-written version (a folder whose name is not an integer is not
a version).

- `export_affine`: `x` float32 [None] -> `y` = slope * x + offset (half_plus_two style; give
  each version its own offset to tell which version answered).
- `export_multi_io`: `serving_default` takes `a` float32 [None, 3] and `b` int32 [None] and
  returns `sum` = a + b[:, None] (float32 [None, 3]) and `count` = 3 (int64 [None]); a second
  signature `scale` takes `a` and returns `scaled` = 2a.
- `export_text`: `text` string [None] -> `length` int32 (bytes), `echo_bytes` (the input,
  b64-encoded by TF Serving's REST API because of the `_bytes` suffix), `upper` (ASCII upper).
- `export_dtypes`: one identity per TF dtype the protocols carry: `x_<dtype>` -> `y_<dtype>`.
- `export_examples`: tf.Example classify and regress signatures (TF Serving's method names).
- `write_corrupt_version`: a version folder whose `saved_model.pb` is garbage.

`export_library` builds the set the gateway tests use (`plus`, `multi`, `text`, `dtypes`,
`examples`);
`copy_versions` and `write_config` assemble a test's repository and serving config from it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import yaml
from tensorflow.core.protobuf import saved_model_pb2

# (name used in input/output names, TF dtype, TF Serving metadata dtype, V2 datatype)
DTYPES: list[tuple[str, tf.DType, str, str]] = [
    ("bool", tf.bool, "DT_BOOL", "BOOL"),
    ("uint8", tf.uint8, "DT_UINT8", "UINT8"),
    ("uint16", tf.uint16, "DT_UINT16", "UINT16"),
    ("uint32", tf.uint32, "DT_UINT32", "UINT32"),
    ("uint64", tf.uint64, "DT_UINT64", "UINT64"),
    ("int8", tf.int8, "DT_INT8", "INT8"),
    ("int16", tf.int16, "DT_INT16", "INT16"),
    ("int32", tf.int32, "DT_INT32", "INT32"),
    ("int64", tf.int64, "DT_INT64", "INT64"),
    ("float16", tf.float16, "DT_HALF", "FP16"),
    ("float32", tf.float32, "DT_FLOAT", "FP32"),
    ("float64", tf.float64, "DT_DOUBLE", "FP64"),
]


def _save_atomically(
    module: tf.Module,
    signatures: dict[str, Any],
    base: Path,
    name: str,
    version: int,
    methods: dict[str, str] | None = None,
) -> Path:
    """`methods` sets signatures' method names (TF2 saves every signature as predict)."""
    model_dir = Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    temporary = model_dir / f".export-{version}-{uuid.uuid4().hex}"
    tf.saved_model.save(module, str(temporary), signatures=signatures)
    if methods:
        _set_method_names(temporary, methods)
    temporary.rename(final)  # atomic within one file system
    return final


def _set_method_names(export_dir: Path, methods: dict[str, str]) -> None:
    graph_file = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(graph_file.read_bytes())
    for signature, method in methods.items():
        saved_model.meta_graphs[0].signature_def[signature].method_name = method
    graph_file.write_bytes(saved_model.SerializeToString())


def export_affine(
    base: Path, name: str, version: int, slope: float = 0.5, offset: float = 2.0
) -> Path:
    """`serving_default`: x float32 [None] -> y = slope * x + offset."""

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.slope = tf.Variable(slope, dtype=tf.float32, name="slope")
            self.offset = tf.Variable(offset, dtype=tf.float32, name="offset")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": self.slope * x + self.offset}

    module = Affine()
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


def export_multi_io(base: Path, name: str, version: int, *, a: str = "a", b: str = "b") -> Path:
    """`serving_default`: a float32 [None, 3], b int32 [None] -> sum = a + b[:, None]
    (float32 [None, 3]), count = 3 (int64 [None]); `scale`: a -> scaled = 2a.
    `a` and `b` rename the inputs (tests that check error messages name inputs distinctly)."""

    a_spec = tf.TensorSpec([None, 3], tf.float32, name=a)
    b_spec = tf.TensorSpec([None], tf.int32, name=b)

    def serve(a_value: tf.Tensor, b_value: tf.Tensor) -> dict[str, tf.Tensor]:
        total = a_value + tf.cast(b_value, tf.float32)[:, tf.newaxis]
        count = tf.fill(tf.shape(b_value)[:1], tf.constant(3, tf.int64))
        return {"sum": total, "count": count}

    def scale(a_value: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scaled": 2.0 * a_value}

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[a_spec, b_spec])
    module.scale = tf.function(scale, input_signature=[a_spec])
    signatures = {"serving_default": module.serve, "scale": module.scale}
    return _save_atomically(module, signatures, base, name, version)


def export_text(base: Path, name: str, version: int) -> Path:
    """`serving_default`: text string [None] -> length int32 (bytes), echo_bytes (the input),
    upper (ASCII upper case)."""

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            return {
                "length": tf.strings.length(text),
                "echo_bytes": tf.identity(text),
                "upper": tf.strings.upper(text),
            }

    module = Text()
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


def export_dtypes(base: Path, name: str, version: int) -> Path:
    """`serving_default`: for every dtype in DTYPES, x_<dtype> [None] -> y_<dtype> (identity)."""
    specs = [tf.TensorSpec([None], dtype, name=f"x_{label}") for label, dtype, _, _ in DTYPES]

    def serve(*values: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            f"y_{label}": tf.identity(value)
            for (label, _, _, _), value in zip(DTYPES, values, strict=True)
        }

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=specs)
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


CLASSES = ["low", "mid", "high"]
"""The class labels of `export_examples`' classification signatures."""


def example_scores(x: float, bias: int = 0) -> list[float]:
    """`export_examples`' scores for an example with features x and bias (see there)."""
    return [x, 2 * x, float(bias)]


def example_regression(x: float, bias: int = 0) -> float:
    return 3 * x + bias


def export_examples(base: Path, name: str, version: int) -> Path:
    """tf.Example models, as estimators exported them: each signature takes `inputs`, serialized
    tf.Example protos (string [None]) with features `x` (float, required) and `bias` (int64,
    default 0), and has TF Serving's method name:
    - `classify` (tensorflow/serving/classify): `classes` CLASSES and `scores` example_scores;
    - `classify_scores` (classify): `scores` only; `classify_classes` (classify): `classes` only;
    - `regress` (tensorflow/serving/regress): `outputs` = example_regression;
    - `serving_default` (predict): x float32 [None] -> y = x (a predict signature, so Classify
      without signature_name is refused as TF Serving refuses it)."""
    features = {
        "x": tf.io.FixedLenFeature([1], tf.float32),
        "bias": tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
    }
    examples_spec = tf.TensorSpec([None], tf.string, name="inputs")

    def scores_of(serialized: tf.Tensor) -> tf.Tensor:
        parsed = tf.io.parse_example(serialized, features)
        x = parsed["x"]
        return tf.concat([x, 2 * x, tf.cast(parsed["bias"], tf.float32)], axis=1)

    def classes_like(scores: tf.Tensor) -> tf.Tensor:
        return tf.tile(tf.constant([CLASSES]), [tf.shape(scores)[0], 1])

    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = scores_of(inputs)
        return {"classes": classes_like(scores), "scores": scores}

    def classify_scores(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": scores_of(inputs)}

    def classify_classes(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"classes": classes_like(scores_of(inputs))}

    def regress(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(inputs, features)
        return {"outputs": 3 * parsed["x"][:, 0] + tf.cast(parsed["bias"][:, 0], tf.float32)}

    def identity(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.identity(x)}

    module = tf.Module()
    signatures = {}
    for key, function in [
        ("classify", classify),
        ("classify_scores", classify_scores),
        ("classify_classes", classify_classes),
        ("regress", regress),
    ]:
        signatures[key] = tf.function(function, input_signature=[examples_spec])
        setattr(module, key, signatures[key])
    module.identity = tf.function(
        identity, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]
    )
    signatures["serving_default"] = module.identity
    methods = {
        "classify": "tensorflow/serving/classify",
        "classify_scores": "tensorflow/serving/classify",
        "classify_classes": "tensorflow/serving/classify",
        "regress": "tensorflow/serving/regress",
    }
    return _save_atomically(module, signatures, base, name, version, methods)


def write_corrupt_version(base: Path, name: str, version: int) -> Path:
    """A version folder that looks like a SavedModel but whose saved_model.pb is garbage."""
    model_dir = Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = model_dir / f".export-{version}-{uuid.uuid4().hex}"
    (temporary / "variables").mkdir(parents=True)
    (temporary / "saved_model.pb").write_bytes(b"\x00\xffthis is not a SavedModel\x13\x37" * 8)
    final = model_dir / str(version)
    temporary.rename(final)
    return final


# --- the gateway tests' model set ---------------------------------------------------------

SLOPE = 0.5
OFFSETS = {1: 2.0, 2: 3.0, 3: 4.0}
"""`plus` version v computes SLOPE * x + OFFSETS[v], so an answer tells which version ran."""

X = [1.0, 2.0, 5.0]

# Distinctive input names for the multi-input model, so a test can check that an error
# message names the input (a message mentioning "a" proves nothing).
FEATURES = "features"
SHIFT = "shift"


DTYPE_VALUES: dict[str, list[Any]] = {
    "bool": [True, False],
    "uint8": [0, 255],
    "uint16": [65535, 7],
    "uint32": [4294967295, 1],
    "uint64": [2**63 + 5, 3],  # beyond int64 and float64 precision
    "int8": [-128, 127],
    "int16": [-32768, 5],
    "int32": [-(2**31), 2**31 - 1],
    "int64": [-(2**53) - 1, 2**53 + 1],  # not representable as float64
    "float16": [1.5, -2.0],
    "float32": [0.25, -1000.5],
    "float64": [0.1, 1e300],
}
"""Two values per dtype of `dtypes` (saved_models.DTYPES), chosen to catch lossy conversions."""


def affine(version: int, xs: list[float] = X) -> list[float]:
    return [SLOPE * x + OFFSETS[version] for x in xs]


def export_library(library: Path) -> Path:
    """<library>/plus/{1,2,3} (affine with OFFSETS), multi/1 (inputs FEATURES, SHIFT), text/1,
    dtypes/1, examples/1."""
    for version, offset in OFFSETS.items():
        export_affine(library, "plus", version, slope=SLOPE, offset=offset)
    export_multi_io(library, "multi", 1, a=FEATURES, b=SHIFT)
    export_text(library, "text", 1)
    export_dtypes(library, "dtypes", 1)
    export_examples(library, "examples", 1)
    return library


def copy_versions(
    library: Path, model_dir: Path, source: str, versions: list[int] | None = None
) -> Path:
    """Copy versions (default: all) of library model `source` into `model_dir`/<version>."""
    model_dir.mkdir(parents=True, exist_ok=True)
    chosen = versions or sorted(int(p.name) for p in (library / source).iterdir())
    for version in chosen:
        shutil.copytree(library / source / str(version), model_dir / str(version))
    return model_dir


def write_config(path: Path, models: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")
    return path
