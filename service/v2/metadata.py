"""Server and model metadata of the Open Inference Protocol, as plain data: the REST front end
answers it as JSON, the gRPC one as ServerMetadataResponse / ModelMetadataResponse."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.core.inference import InferenceCore, ModelRef
from service.core.record import RequestRecord
from service.core.routing import Servable
from service.core.servable import VersionState
from service.core.signatures import DEFAULT_SIGNATURE, TensorInfo

SERVER_NAME = "modelserve"
# Triton's names for the extensions, as its clients and tools look them up.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")
PLATFORM = "tensorflow_savedmodel"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def addressed_metadata(core: InferenceCore, ref: ModelRef, record: RequestRecord) -> dict[str, Any]:
    """The metadata of the version `ref` addresses; without a version, the newest one's, listing
    every available version."""
    servable = core.resolve(ref, record)
    if ref.version is not None:
        return model_metadata(servable, [str(servable.version)])
    statuses = core.statuses(ref, record)
    available = [str(v.version) for v in statuses if v.state == VersionState.AVAILABLE]
    return model_metadata(servable, available)


def model_metadata(servable: Servable, versions: list[str]) -> dict[str, Any]:
    """The `serving_default` signature's tensors of one served version."""
    signature = servable.signature(DEFAULT_SIGNATURE)
    return {
        "name": servable.model,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [tensor_metadata(t) for t in signature.inputs.values()],
        "outputs": [tensor_metadata(t) for t in signature.outputs.values()],
    }


def tensor_metadata(tensor: TensorInfo) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.dtype.v2_name, "shape": tensor.v2_shape()}
