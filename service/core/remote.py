"""Models served by a remote TF Serving-compatible gRPC backend (`backend: {grpc: host:port}`):
a version's "instances" are `RemoteRunner`s, one `Predict` per batch, on the inference threads.
One channel per backend reaches every address the target resolves to, batches round-robin."""

from __future__ import annotations

import logging

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.core.batching import ModelCall
from service.core.dtypes import Arrays
from service.core.runtime import client_reason
from service.core.serving_config import BackendConfig
from service.core.signatures import Signature, signatures_from_defs
from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelFailureError,
    QueueFullError,
    ServingError,
    UnavailableError,
)

SCAN_TIMEOUT_SECONDS = 2.0
log = logging.getLogger(__name__)

_ERRORS: dict[grpc.StatusCode, type[ServingError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QueueFullError,
    grpc.StatusCode.NOT_FOUND: UnavailableError,  # the backend lost it: not the client's fault
}


class RemoteBackend:
    def __init__(self, model: str, config: BackendConfig, max_message_bytes: int) -> None:
        self.remote_name = config.model_name or model
        self.address = config.grpc
        self.timeout_seconds = config.timeout_ms / 1000
        self._channel = grpc.insecure_channel(
            config.grpc,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # a restarted backend is found again within seconds, not gRPC's default 2 min
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
                # every address the target resolves to (a fleet of pods) takes batches in turn
                ("grpc.lb_policy_name", "round_robin"),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def available_versions(self) -> list[int]:
        """The versions the backend serves now (blocking; UnavailableError when unreachable)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.remote_name
        try:
            response = self._models.GetModelStatus(request, timeout=SCAN_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise self._error(exc, "GetModelStatus") from None
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return sorted(s.version for s in response.model_version_status if s.state == available)

    def load(self, version: int, instances: int) -> list[RemoteRunner]:  # blocking
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.remote_name
        request.model_spec.version.value = version
        try:
            response = self._predict.GetModelMetadata(request, timeout=SCAN_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise self._error(exc, "GetModelMetadata") from None
        definitions = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(definitions)
        signatures = signatures_from_defs(definitions.signature_def)
        return [RemoteRunner(self, version, signatures) for _ in range(max(1, instances))]

    def predict(
        self, version: int, signature_name: str, inputs: Arrays, left: float | None = None
    ) -> Arrays:
        """One call; `left`: the batch's own time left, capped by the configured timeout."""
        if left is not None and left <= 0:  # no request of the batch can use an answer
            raise DeadlineExceededError(
                f"backend {self.address} (Predict {self.remote_name!r}): DEADLINE_EXCEEDED: "
                "the batch's deadline passed before the call"
            )
        timeout = self.timeout_seconds if left is None else min(left, self.timeout_seconds)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.remote_name
        request.model_spec.version.value = version
        request.model_spec.signature_name = signature_name
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        try:
            response = self._predict.Predict(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc, "Predict") from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()

    def _error(self, exc: grpc.RpcError, call: str) -> ServingError:
        """The backend's failure as the client may see it: details naming the model's internals
        are logged for the operator, not sent."""
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        kind = _ERRORS.get(code, ModelFailureError)
        where = f"backend {self.address} ({call} {self.remote_name!r}): {code.name}"
        shown = client_reason(details.strip().splitlines()[0] if details.strip() else "")
        if shown is None:
            log.warning("%s: %s", where, details)
            shown = "the backend's reason names the model's internals; it is in the gateway log"
        return kind(f"{where}: {shown}")


class RemoteRunner:
    def __init__(
        self, backend: RemoteBackend, version: int, signatures: dict[str, Signature]
    ) -> None:
        self.backend = backend
        self.version = version
        self.signatures = signatures
        self.device = f"grpc://{backend.address}"

    def run(self, call: ModelCall) -> Arrays:
        results = self.backend.predict(self.version, call.signature, call.inputs, call.seconds_left)
        return {k: v for k, v in results.items() if not call.outputs or k in call.outputs}
