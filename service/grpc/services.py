"""TF Serving's gRPC API (PredictionService, ModelService) from the official protos, so TF Serving
clients work unchanged. A call is one more caller of the inference core (it may share a batch with
REST requests); a failure's canonical code is its gRPC status, and the client's deadline becomes
the request's deadline in the batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

import grpc
import numpy as np
from google.protobuf import message
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from service.core import classify_regress
from service.core.decoding import Decoder
from service.core.inference import Call, InferenceCore, ModelRef
from service.core.record import RequestRecord
from service.core.routing import Servable
from service.core.validation import check_outputs
from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    PayloadTooLargeError,
    ServingError,
    UnimplementedError,
)
from service.grpc import codec as grpc_codec
from service.grpc import message_split
from service.grpc.message_split import MessageSplitter, Strings
from service.metrics import Metrics
from service.observer import CLIENT_GONE, Finished, log_failure, observe

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=message.Message)
Context: TypeAlias = grpc.aio.ServicerContext

# Importing the *_pb2 modules (the *_pb2_grpc ones do not) loads the services into the default
# descriptor pool, where server reflection looks them up.
PREDICTION_SERVICE: str = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
MODEL_SERVICE: str = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


@dataclass(eq=False)
class _Servicer:
    """What every servicer's calls use."""

    SERVICE: ClassVar[str]
    core: InferenceCore
    metrics: Metrics
    decoder: Decoder
    splitter: MessageSplitter
    max_message_bytes: int

    def check_answer_size(self, size: int) -> None:
        """gRPC would fail a larger answer with no reason the client can act on."""
        if size > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"the answer would be {size} bytes, more than grpc_max_message_bytes "
                f"({self.max_message_bytes}); ask for fewer rows, or fewer outputs "
                "(output_filter)"
            )

    async def parse(self, kind: type[M], raw: bytes) -> tuple[M, dict[str, Strings]]:
        """A request parsed off the event loop, with the bulk a large one was split into."""

        def parse() -> tuple[M, dict[str, Strings]]:
            split = None
            if len(raw) > message_split.INLINE_BYTES:
                split = self.splitter.split(kind.DESCRIPTOR.full_name, raw)
            body, strings = (raw, {}) if split is None else (split.rest, split.strings)
            try:
                return kind.FromString(body), strings
            except DecodeError as exc:
                raise InvalidInputError(
                    f"the request is not a valid {kind.__name__}: {exc}"
                ) from None

        return await self.decoder.run(len(raw), parse)


DEADLINE_TRANSIT_SECONDS = 0.25  # see `_ended_by_client`


def _ended_by_client(context: Context) -> grpc.StatusCode:
    """Why gRPC cancelled a call. The server counts the client's deadline from when the headers
    arrive, so it ends later by the transit (63 ms on a busy 2-core machine); a client whose
    deadline passes resets the stream as it would to cancel: a cancellation with less than
    DEADLINE_TRANSIT_SECONDS left is the deadline's."""
    remaining = context.time_remaining()
    if remaining is not None and remaining < DEADLINE_TRANSIT_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


Work: TypeAlias = Callable[[Any, Any, Context, RequestRecord], Awaitable[T]]


def _observed(work: Work[T]) -> Callable[[Any, Any, Context], Awaitable[T]]:
    """A servicer method as one observed call, given its record; a failure aborts the call with
    its gRPC status."""

    async def method(self: _Servicer, request: Any, context: Context) -> T:
        route = f"/{self.SERVICE}/{work.__name__}"
        started = time.perf_counter()
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        record = RequestRecord(str(request_id)[:128] or "-")
        code, status = grpc.StatusCode.OK, 200
        try:
            return await work(self, request, context, record)
        except ServingError as exc:
            code, status = grpc.StatusCode[exc.code], exc.http_status
            log_failure(route, exc)
            await context.abort(code, exc.message)
            raise  # abort() raises; this line only tells type checkers so
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client cancels or its deadline passes first
            code = _ended_by_client(context)
            status = 504 if code is grpc.StatusCode.DEADLINE_EXCEEDED else CLIENT_GONE
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, status = grpc.StatusCode.INTERNAL, 500
            log.exception("%s failed", route)
            await context.abort(code, f"internal error: {type(exc).__name__}")
            raise
        finally:
            seconds = time.perf_counter() - started
            finished = Finished("grpc", "grpc", route, route, code.name, status, seconds)
            observe(self.metrics, record, finished)

    return method


def _addressed(spec: model_pb2.ModelSpec) -> ModelRef:
    if not spec.name:
        raise InvalidInputError("model_spec.name is required")
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return ModelRef(spec.name, version, label)


def _answered_spec(servable: Servable | Call, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.model, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def _check_wanted(context: Context) -> None:
    """Raises when the call ended while it was being decoded: gRPC cancels the handler only at
    its next await, and an await on finished work returns at once."""
    if context.cancelled() or context.done():
        raise asyncio.CancelledError
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError("the deadline passed while the request was being decoded")


def _timeout_ms(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0) * 1000


class PredictionServicer(_Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    SERVICE = PREDICTION_SERVICE

    @_observed
    async def Predict(self, raw: bytes, context: Context, record: RequestRecord) -> bytes:  # noqa: N802 (the proto's method names)
        """Takes and returns serialized messages (see `add_services`): grpc.aio would parse and
        serialize them on the event loop."""
        request, split_strings = await self.parse(predict_pb2.PredictRequest, raw)
        message_split.check_predict(request)
        async with self.core.admit(_addressed(request.model_spec), record) as call:
            signature = call.signature(request.model_spec.signature_name)
            call.check_rows(signature.name, grpc_codec.declared_rows(request.inputs))
            inputs = await self.decoder.run(
                len(raw),
                lambda: grpc_codec.decode_inputs(request.inputs, signature, split_strings),
            )
            wanted = list(request.output_filter)
            check_outputs(signature, wanted, field="output_filter")
            _check_wanted(context)  # the model is the costliest stage: not for nobody
            outputs = await call.predict(signature.name, inputs, wanted, _timeout_ms(context))
        size = sum(array.nbytes for array in outputs.values())
        self.check_answer_size(size)  # before the work of encoding it

        def encode() -> bytes:
            spec = _answered_spec(call, signature.name)
            response = predict_pb2.PredictResponse(model_spec=spec)
            for name, proto in grpc_codec.encode_outputs(outputs).items():
                response.outputs[name].CopyFrom(proto)
            return cast(bytes, response.SerializeToString())

        answer = await self.decoder.run(size, encode)
        self.check_answer_size(len(answer))
        return answer

    @_observed
    async def GetModelMetadata(  # noqa: N802
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: Context,
        record: RequestRecord,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = set(request.metadata_field)
        if fields != {"signature_def"}:
            raise InvalidInputError(
                f"metadata_field must be ['signature_def'], got {sorted(fields)}"
            )
        servable = self.core.resolve(_addressed(request.model_spec), record)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signatures.items():
            signatures.signature_def[name].CopyFrom(signature.definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_answered_spec(servable, "")
        )
        response.metadata["signature_def"].Pack(signatures)
        return response

    @_observed
    async def Classify(self, raw: bytes, context: Context, record: RequestRecord) -> bytes:  # noqa: N802
        """Serialized messages, as Predict's."""
        call, signature, outputs, count = await self._examples(raw, context, "classify", record)
        spec = _answered_spec(call, signature)
        response = classification_pb2.ClassificationResponse(model_spec=spec)
        for classes in classify_regress.classifications(outputs, count):
            result = response.result.classifications.add()
            for label, score in classes:
                result.classes.add(label=label, score=score)
        return cast(bytes, response.SerializeToString())

    @_observed
    async def Regress(self, raw: bytes, context: Context, record: RequestRecord) -> bytes:  # noqa: N802
        """Serialized messages, as Predict's."""
        call, signature, outputs, count = await self._examples(raw, context, "regress", record)
        response = regression_pb2.RegressionResponse(model_spec=_answered_spec(call, signature))
        for value in classify_regress.regressions(outputs, count):
            response.result.regressions.add(value=value)
        return cast(bytes, response.SerializeToString())

    async def _examples(
        self, raw: bytes, context: Context, method: classify_regress.Method, record: RequestRecord
    ) -> tuple[Call, str, dict[str, np.ndarray], int]:
        """Runs a Classify/Regress request's examples: (call, signature, outputs, count)."""
        kind = (
            classification_pb2.ClassificationRequest
            if method == "classify"
            else regression_pb2.RegressionRequest
        )
        request, split_strings = await self.parse(kind, raw)
        ref = _addressed(request.model_spec)
        async with self.core.admit(ref, record, method=method) as call:
            target = call.example_signature(request.model_spec.signature_name, method)
            split_examples = split_strings.get(message_split.EXAMPLES)
            rows = classify_regress.example_count(request.input, split_examples)
            call.check_rows(target.signature.name, rows)
            serialized = await self.decoder.run(
                len(raw),
                lambda: classify_regress.serialized_from_proto(request.input, split_examples),
            )
            outputs = await call.run_examples(target, serialized, _timeout_ms(context))
        return call, target.signature.name, outputs, len(serialized)

    @_observed
    async def MultiInference(self, request: Any, context: Context, record: RequestRecord) -> None:  # noqa: N802
        raise UnimplementedError("MultiInference is not implemented by modelserve; use Predict")


class ModelServicer(_Servicer, model_service_pb2_grpc.ModelServiceServicer):
    SERVICE = MODEL_SERVICE

    @_observed
    async def GetModelStatus(  # noqa: N802
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: Context,
        record: RequestRecord,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        versions = self.core.statuses(_addressed(request.model_spec), record)
        response = get_model_status_pb2.GetModelStatusResponse()
        for servable in versions:
            status = response.model_version_status.add(
                version=servable.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(servable.state.value),
            )
            status.status.error_code = grpc.StatusCode[servable.error_code].value[0]
            status.status.error_message = servable.error_message
        return response

    @_observed
    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: Context, record: RequestRecord
    ) -> None:
        raise UnimplementedError(
            "reloading the config over gRPC is not supported; the server rescans its model "
            "directories by itself, and REST `POST /admin/reload` rescans them at once"
        )


def add_services(
    server: grpc.aio.Server,
    core: InferenceCore,
    metrics: Metrics,
    decoder: Decoder,
    splitter: MessageSplitter,
    max_message_bytes: int,
) -> None:
    prediction = PredictionServicer(core, metrics, decoder, splitter, max_message_bytes)
    # The methods whose requests grow with the data, without (de)serializers: their messages
    # are parsed and built off the event loop. gRPC asks the generic handlers first.
    raw = {
        name: grpc.unary_unary_rpc_method_handler(getattr(prediction, name))
        for name in ("Predict", "Classify", "Regress")
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PREDICTION_SERVICE, raw),)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(core, metrics, decoder, splitter, max_message_bytes), server
    )
