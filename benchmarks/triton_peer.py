"""Triton as a peer of modelserve: the same SavedModels behind PyTriton's bundled Triton server.

Each model's `serving_default` signature is a Python callable that PyTriton binds to Triton
(CPU only) with Triton's dynamic batcher on; inputs and outputs are declared from the signature
(names, dtypes, shapes without the batch dimension; strings as BYTES). HTTP (V2 / Open
Inference Protocol: `POST /v2/models/<m>/infer`) on 127.0.0.1, and with `--grpc-port` Triton's
gRPC service (`inference.GRPCInferenceService`) too; its statistics endpoint is open, for the
mean batch size. Models come from models/, or from the model repository `--model-dir` names
(<dir>/<model>/<version>/, a SavedModel per version).

Runs in the Triton venv made by scripts/triton-venv.sh (tensorflow-cpu, nvidia-pytriton, numpy<2:
nvidia-pytriton 0.7 requires numpy 1), not modelserve's (numpy 2): it imports nothing from
modelserve. Started by benchmarks/serving.py as its own process with that venv's interpreter
(--triton-python); by hand, from the repository root:
    .venv-triton/bin/python benchmarks/triton_peer.py --port 8000 --models digits votes
    [--grpc-port 8001] [--model-dir DIR]
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

MODELS = Path(__file__).resolve().parent.parent / "models"
MAX_BATCH_SIZE = {"resnet50": 32}
DEFAULT_MAX_BATCH_SIZE = 128

InferFunc = Callable[..., dict[str, np.ndarray]]


def newest_version(model: str, model_dir: Path = MODELS) -> Path:
    version = max(int(p.name) for p in (model_dir / model).iterdir() if p.name.isdigit())
    return model_dir / model / str(version)


def numpy_dtype(tf_dtype: Any) -> type:
    """The numpy type PyTriton declares for a TensorFlow dtype (strings: bytes)."""
    return np.bytes_ if tf_dtype.name == "string" else tf_dtype.as_numpy_dtype


def row_shape(spec: Any) -> tuple[int, ...]:
    """A TensorSpec's shape without the batch dimension, unknown sizes as -1. Triton wants at
    least one dimension: a scalar per row (a `[None]` string input) is declared as `[1]`."""
    return tuple(-1 if d is None else d for d in spec.shape.as_list()[1:]) or (1,)


def tensors(specs: dict[str, Any]) -> list[Any]:
    """PyTriton tensors for a signature's TensorSpecs."""
    from pytriton.model_config import Tensor

    return [
        Tensor(name=name, dtype=numpy_dtype(spec.dtype), shape=row_shape(spec))
        for name, spec in specs.items()
    ]


def infer_func(signature: Any) -> InferFunc:
    """The signature as a batched PyTriton callable: arrays in, arrays out, each reshaped
    between the signature's rank and the rank declared to Triton (see `row_shape`)."""
    import tensorflow as tf
    from pytriton.decorators import batch

    _, input_specs = signature.structured_input_signature
    input_ranks = {name: spec.shape.rank for name, spec in input_specs.items()}

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        arguments = {
            name: tf.constant(value.reshape(value.shape[: input_ranks[name]]))
            for name, value in inputs.items()
        }
        outputs = {name: tensor.numpy() for name, tensor in signature(**arguments).items()}
        return {name: a.reshape(-1, 1) if a.ndim == 1 else a for name, a in outputs.items()}

    return infer


def bind(triton: Any, model: str, model_dir: Path = MODELS) -> None:
    """Loads the model's newest SavedModel and binds its `serving_default` to Triton."""
    import tensorflow as tf
    from pytriton.model_config import DynamicBatcher, ModelConfig

    path = newest_version(model, model_dir)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    triton.bind(
        model_name=model,
        infer_func=infer_func(signature),
        inputs=tensors(input_specs),
        outputs=tensors(signature.structured_outputs),
        config=ModelConfig(
            max_batch_size=MAX_BATCH_SIZE.get(model, DEFAULT_MAX_BATCH_SIZE),
            batcher=DynamicBatcher(max_queue_delay_microseconds=0),
        ),
        strict=True,
    )


def stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # Triton.serve() stops the server on it


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (V2 protocol)")
    parser.add_argument("--models", nargs="+", default=["digits", "votes", "sentiment"])
    parser.add_argument(
        "--grpc-port", type=int, help="also serve Triton's gRPC service on this port (default: off)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=MODELS,
        help="the model repository: <dir>/<model>/<version>/ (default: models/)",
    )
    args = parser.parse_args()
    # Triton's Python backend stub links libpython: point the loader at this interpreter's
    # (benchmarks/serving.py has done so already when it started the peer).
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])
    logging.basicConfig(level=logging.WARNING)
    from pytriton.triton import (
        DEFAULT_PROTECTED_ENDPOINTS,
        Triton,
        TritonConfig,
        TritonSecurityConfig,
    )

    grpc = {"grpc_address": "127.0.0.1", "grpc_port": args.grpc_port} if args.grpc_port else {}
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        allow_grpc=bool(grpc),
        allow_metrics=False,
        **grpc,
    )
    # The benchmark reads the batch statistics (GET /v2/models/<m>/stats) without a token.
    security = TritonSecurityConfig(
        restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    )
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with Triton(config=config, security_config=security) as triton:
        for model in args.models:
            bind(triton, model, args.model_dir)
        triton.serve()


if __name__ == "__main__":
    main()
