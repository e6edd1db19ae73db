"""Triton's model configuration extension: a served version's facts in the JSON form of Triton's
`ModelConfig`, which Triton's clients (`get_model_config`) and tools read. Only what modelserve
knows is filled in: the platform, version policy, batch size, inputs and outputs of
`serving_default`, the dynamic batcher's delay and queue policy, and the model's instances."""

from __future__ import annotations

from typing import Any

from service.core.routing import Servable
from service.core.serving_config import VersionPolicy
from service.core.signatures import DEFAULT_SIGNATURE, TensorInfo


def model_config(servable: Servable) -> dict[str, Any]:
    batching = servable.config.batching
    signature = servable.signature(DEFAULT_SIGNATURE)
    batched = batching.enabled
    config: dict[str, Any] = {
        "name": servable.model,
        "platform": "tensorflow_savedmodel",
        "backend": "tensorflow",
        "version_policy": _version_policy(servable.config.version_policy),
        "max_batch_size": batching.max_batch_size if batched else 0,
        "input": [_tensor(tensor, batched) for tensor in signature.inputs.values()],
        "output": [_tensor(tensor, batched) for tensor in signature.outputs.values()],
        "instance_group": _instance_groups(servable),
    }
    if batched:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": round(batching.max_batch_delay_ms * 1000),
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_ms * 1000),
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


def _tensor(tensor: TensorInfo, batched: bool) -> dict[str, Any]:
    """Triton's dims leave out the batch dimension of a batched model; -1 is any size."""
    dims = tensor.v2_shape()
    if batched and dims:
        dims = dims[1:]
    datatype = tensor.dtype.v2_name
    return {
        "name": tensor.name,
        "data_type": "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}",
        "dims": dims if tensor.shape is not None else [-1],
    }


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.kind == "latest":
        return {"latest": {"num_versions": policy.num_versions}}
    if policy.kind == "specific":
        return {"specific": {"versions": list(policy.versions)}}
    return {"all": {}}


def _instance_groups(servable: Servable) -> list[dict[str, Any]]:
    """One group per device kind the version's instances run on (the placement when the
    version reports none)."""
    devices = [i["device"] for i in servable.serving_details().get("instances", [])]
    if not devices:
        kind = "KIND_GPU" if servable.config.placement.device.startswith("gpu") else "KIND_CPU"
        return [
            {"name": servable.model, "kind": kind, "count": servable.config.placement.instances}
        ]
    groups: dict[str, int] = {}
    for device in devices:
        kind = "KIND_GPU" if ":GPU:" in device.upper() else "KIND_CPU"
        groups[kind] = groups.get(kind, 0) + 1
    return [{"name": servable.model, "kind": kind, "count": n} for kind, n in groups.items()]
