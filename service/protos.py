"""TensorFlow's generated protobuf modules without TensorFlow's runtime, for front-end workers.

The front-end processes (HTTP + gRPC: parse, validate, encode) need the protobuf modules that
ship inside the TensorFlow wheel (`tensorflow.core.framework.tensor_pb2`, `types_pb2`,
`tensorflow.core.protobuf.meta_graph_pb2`, `tensorflow.core.example.example_pb2`, ...) and
`tensorflow_serving.apis.*`, whose pb2 modules import those. Importing them normally runs
`tensorflow/__init__.py`, which loads the whole runtime (seconds and about 500 MB per process);
only the model process needs that.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_PACKAGE = "tensorflow"
_RUNTIME = "tensorflow.python"


def use_proto_only_tensorflow() -> None:
    """Makes `tensorflow` a bare package over the installed wheel's directory, so that its
    submodules (the pb2 files) import without running `tensorflow/__init__.py`.

    Call it first thing at a front-end worker's start, before anything imports TensorFlow. It
    does nothing when TensorFlow is already imported (real or bare) or not installed.
    Afterwards `import tensorflow as tf` in this process gives an empty package: worker code
    must never use `tf.*` (only `tensorflow.core...pb2` and `tensorflow_serving.apis` modules).
    """
    if _PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType(_PACKAGE)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules[_PACKAGE] = package


def tensorflow_runtime_loaded() -> bool:
    """Whether TensorFlow's runtime (not only its protobuf modules) is imported here."""
    return _RUNTIME in sys.modules
