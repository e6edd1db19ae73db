"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe V2 with Triton's
model configuration and statistics extensions), on the same port as TF Serving's services, so
Triton's and KServe's gRPC clients work unchanged. A ModelInfer call is one more caller of the
inference core: the same batchers, deadlines, metrics, API keys and TLS as every other call."""

from __future__ import annotations

from functools import partial
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from service.core.inference import ModelRef, parse_version
from service.core.record import RequestRecord
from service.core.servable import VersionState
from service.core.validation import check_outputs
from service.errors import InvalidInputError, UnavailableError, UnimplementedError
from service.grpc import v2_codec
from service.grpc.calls import Context, Servicer, check_wanted, observed, timeout_ms
from service.v2 import metadata, model_config, statistics

# Importing service_pb2 loads the service into the default descriptor pool (server reflection).
INFERENCE_SERVICE: str = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _addressed(name: str, version: str) -> ModelRef:
    if not name:
        raise InvalidInputError("the model name is required")
    return ModelRef(name, parse_version(version) if version else None)


class InferenceServicer(Servicer):
    SERVICE = INFERENCE_SERVICE

    @observed
    async def ServerLive(  # noqa: N802 (the proto's method names)
        self, request: service_pb2.ServerLiveRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    @observed
    async def ServerReady(  # noqa: N802
        self, request: service_pb2.ServerReadyRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.core.repository.is_ready())

    @observed
    async def ModelReady(  # noqa: N802
        self, request: service_pb2.ModelReadyRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ModelReadyResponse:
        try:  # an unknown model or version: NOT_FOUND
            self.core.resolve(_addressed(request.name, request.version), record)
        except UnavailableError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    @observed
    async def ServerMetadata(  # noqa: N802
        self, request: service_pb2.ServerMetadataRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(**metadata.server_metadata())

    @observed
    async def ModelMetadata(  # noqa: N802
        self, request: service_pb2.ModelMetadataRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ModelMetadataResponse:
        ref = _addressed(request.name, request.version)
        answer = metadata.addressed_metadata(self.core, ref, record)
        return json_format.ParseDict(answer, service_pb2.ModelMetadataResponse())

    @observed
    async def ModelConfig(  # noqa: N802
        self, request: service_pb2.ModelConfigRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ModelConfigResponse:
        servable = self.core.resolve(_addressed(request.name, request.version), record)
        # The REST extension's JSON is the protobuf JSON form of the same message.
        config = {"config": model_config.model_config(servable)}
        return json_format.ParseDict(config, service_pb2.ModelConfigResponse())

    @observed
    async def ModelStatistics(  # noqa: N802
        self, request: service_pb2.ModelStatisticsRequest, context: Context, record: RequestRecord
    ) -> service_pb2.ModelStatisticsResponse:
        """Every model's (no name), one model's (no version) or one version's."""
        ref = _addressed(request.name, request.version) if request.name else None
        answer = await statistics.statistics(self.core, ref, record)
        return json_format.ParseDict(answer, service_pb2.ModelStatisticsResponse())

    @observed
    async def ModelInfer(self, raw: bytes, context: Context, record: RequestRecord) -> bytes:  # noqa: N802
        """Takes and returns serialized messages (see `add_inference_service`), parsed and built
        off the event loop when large."""
        # not split: raw contents parse as one bytes object each
        request, _ = await self.parse(service_pb2.ModelInferRequest, raw, split_strings=False)
        envelope = v2_codec.parse_envelope(request)
        ref = _addressed(request.model_name, request.model_version)
        async with self.core.admit(ref, record) as call:
            signature = call.signature(envelope.signature_name)
            call.check_rows(signature.name, v2_codec.declared_rows(request))
            inputs = await self.decoder.run(
                len(raw), lambda: v2_codec.decode_inputs(request, signature, envelope.raw)
            )
            check_outputs(signature, envelope.output_names, field="outputs")
            check_wanted(context)
            deadline_ms = _earlier(timeout_ms(context), envelope.timeout_ms)
            outputs = await call.predict(signature.name, inputs, envelope.output_names, deadline_ms)
        return await self.serialized(
            outputs,
            lambda: v2_codec.encode_response(
                request, outputs, call.model, call.version, envelope.raw
            ),
        )

    @observed
    async def RepositoryIndex(  # noqa: N802
        self, request: service_pb2.RepositoryIndexRequest, context: Context, record: RequestRecord
    ) -> service_pb2.RepositoryIndexResponse:
        """Every version of every model with its state (`ready`: the AVAILABLE ones only)."""
        response = service_pb2.RepositoryIndexResponse()
        repository = self.core.repository
        for name in repository.model_names():
            for servable in repository.statuses(name):
                available = servable.state == VersionState.AVAILABLE
                if request.ready and not available:
                    continue
                response.models.add(
                    name=name,
                    version=str(servable.version),
                    state="READY" if available else servable.state.value,
                    reason=servable.error_message,
                )
        return response

    async def ModelStreamInfer(self, requests: Any, context: Context) -> None:  # noqa: N802
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "ModelStreamInfer (decoupled and sequence models) is not implemented by modelserve; "
            "use ModelInfer",
        )


def _earlier(first: float | None, second: float | None) -> float | None:
    given = [ms for ms in (first, second) if ms is not None]
    return min(given) if given else None


def _unimplemented(what: str) -> Any:
    async def method(
        self: InferenceServicer, request: Any, context: Context, record: RequestRecord
    ) -> None:
        raise UnimplementedError(what)

    return method


# Triton's extensions modelserve does not have, with what to use instead.
for _name, _reason in {
    "RepositoryModelLoad": "use REST POST /admin/models/{model}/load",
    "RepositoryModelUnload": "use REST POST /admin/models/{model}/unload",
    "SystemSharedMemoryStatus": "shared-memory inputs are not supported",
    "SystemSharedMemoryRegister": "shared-memory inputs are not supported",
    "SystemSharedMemoryUnregister": "shared-memory inputs are not supported",
    "CudaSharedMemoryStatus": "CUDA shared-memory inputs are not supported",
    "CudaSharedMemoryRegister": "CUDA shared-memory inputs are not supported",
    "CudaSharedMemoryUnregister": "CUDA shared-memory inputs are not supported",
    "TraceSetting": "tracing settings are not supported",
    "LogSettings": "log settings are set at start (--log-level)",
}.items():
    _method = _unimplemented(f"{_name} is not implemented by modelserve: {_reason}")
    _method.__name__ = _name
    setattr(InferenceServicer, _name, observed(_method))


def add_inference_service(server: grpc.aio.Server, servicer: InferenceServicer) -> None:
    """Every method of the service from its descriptor. ModelInfer goes without (de)serializers,
    as TF Serving's Predict: grpc.aio would parse and serialize on the event loop."""
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:  # a method of a newer proto
            behaviour = partial(
                observed(_unimplemented(f"{method.name} is not implemented by modelserve")),
                servicer,
            )
        if method.name == "ModelInfer":
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour)
            continue
        request = getattr(service_pb2, method.input_type.name)
        response = getattr(service_pb2, method.output_type.name)
        handler = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = handler(
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
