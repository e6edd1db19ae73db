"""TF Serving's gRPC API (`tensorflow.serving.PredictionService`, `ModelService`) from the
official protos of `tensorflow-serving-api`, so existing TF Serving clients work unchanged.

The servicers share the REST protocols' inference core, batchers and metrics: a gRPC Predict is
one more caller of `service.core.inference`, so it can share a batch with REST requests. Every
failure is a `ServingError` whose canonical code is the gRPC status (NOT_FOUND,
INVALID_ARGUMENT, RESOURCE_EXHAUSTED for a full queue, DEADLINE_EXCEEDED, UNAVAILABLE), and the
client's deadline becomes the request's deadline in the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import any_pb2, message
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
from service.core.servable import ServableVersion
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


def _service_name(module: Any, service: str) -> str:
    """A service's full name from its proto file's descriptor. Importing that file's module
    (the *_pb2_grpc modules do not) also loads the service into the default descriptor pool,
    where server reflection looks services up to describe them."""
    name: str = module.DESCRIPTOR.services_by_name[service].full_name
    return name


PREDICTION_SERVICE = _service_name(prediction_service_pb2, "PredictionService")
MODEL_SERVICE = _service_name(model_service_pb2, "ModelService")


class CallRunner:
    """What every servicer method shares: the parts a call uses (inference core, decoders,
    metrics) and how a call runs, fails (its gRPC status) and is observed."""

    def __init__(
        self,
        core: InferenceCore,
        metrics: Metrics,
        decoder: Decoder,
        splitter: MessageSplitter,
        max_message_bytes: int,
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.decoder = decoder
        self.splitter = splitter
        self.max_message_bytes = max_message_bytes

    def check_answer_size(self, size: int) -> None:
        """Refuses an answer larger than gRPC may send (gRPC would fail the call with no
        reason the client can act on)."""
        if size > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"the answer would be {size} bytes, more than grpc_max_message_bytes "
                f"({self.max_message_bytes}); ask for fewer rows, or fewer outputs "
                "(output_filter)"
            )

    async def parse(self, kind: type[M], raw: bytes) -> tuple[M, dict[str, Strings]]:
        """A serialized request parsed off the event loop, with the bulk a large one was split
        into (`service.grpc.message_split`)."""

        def parse() -> tuple[M, dict[str, Strings]]:
            split = None
            if len(raw) > message_split.INLINE_BYTES:
                split = self.splitter.split(kind.DESCRIPTOR.full_name, raw)
            if split is None:
                return _parse(kind, raw), {}
            return _parse(kind, split.rest), split.strings

        return await self.decoder.run(len(raw), parse)

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        route: str,
        work: Callable[[RequestRecord], Awaitable[T]],
    ) -> T:
        """Runs one call's `work`; a failure aborts the call with its gRPC status."""
        started = time.perf_counter()
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        record = RequestRecord(str(request_id)[:128] or "-")
        code, status = grpc.StatusCode.OK, 200
        try:
            return await work(record)
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


DEADLINE_TRANSIT_SECONDS = 0.25
"""A call cancelled with less than this left before its deadline (as the server counts it)
was ended by its deadline, on the client's side (see `_ended_by_client`)."""


def _ended_by_client(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why gRPC cancelled a call: its deadline passed, or the client cancelled it.

    The deadline is the client's: it sends the time left (grpc-timeout), and the server counts
    that from when the headers arrive, so the server's copy ends later by the request's transit
    (63 ms seen on a busy 2-core machine). When the client's deadline passes first, the client
    resets the stream as it would to cancel (RST_STREAM CANCEL: the two look alike on the wire),
    and the server sees the call cancelled with that transit still left. A cancellation that
    close to the deadline is the deadline's; only one well before it is the client's own."""
    remaining = context.time_remaining()
    if remaining is not None and remaining < DEADLINE_TRANSIT_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


_EXAMPLE_METHODS = {
    "classify": classification_pb2.ClassificationRequest,
    "regress": regression_pb2.RegressionRequest,
}


def _addressed(spec: model_pb2.ModelSpec) -> ModelRef:
    if not spec.name:
        raise InvalidInputError("model_spec.name is required")
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return ModelRef(spec.name, version, label)


def _answered_spec(servable: ServableVersion | Call, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.model, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def _parse(message: type[M], raw: bytes) -> M:
    try:
        parsed: M = message.FromString(raw)
    except DecodeError as exc:
        raise InvalidInputError(f"the request is not a valid {message.__name__}: {exc}") from None
    return parsed


def _check_wanted(context: grpc.aio.ServicerContext) -> None:
    """Raises when the call has ended (client cancelled, deadline passed) while it was being
    decoded: gRPC cancels the handler only at its next await, and an await on finished work
    returns at once."""
    if context.cancelled() or context.done():
        raise asyncio.CancelledError
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError("the deadline passed while the request was being decoded")


def _predict_response(
    call: Call, signature_name: str, outputs: dict[str, np.ndarray]
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse(model_spec=_answered_spec(call, signature_name))
    for name, proto in grpc_codec.encode_outputs(outputs).items():
        response.outputs[name].CopyFrom(proto)
    return response


def _timeout_ms(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0) * 1000


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, calls: CallRunner) -> None:
        self._calls = calls

    async def Predict(  # noqa: N802 (the proto's method names)
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Takes and returns the messages serialized (see `add_services`): grpc.aio would
        parse and serialize them on the event loop."""
        route = f"/{PREDICTION_SERVICE}/Predict"
        return await self._calls.run(
            context, route, lambda record: self._predict(request, context, record)
        )

    async def _predict(
        self, raw: bytes, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> bytes:
        decoder = self._calls.decoder
        request, split_strings = await self._calls.parse(predict_pb2.PredictRequest, raw)
        message_split.check_predict(request)
        async with self._calls.core.admit(_addressed(request.model_spec), record) as call:
            signature = call.signature(request.model_spec.signature_name)
            call.check_rows(signature.name, grpc_codec.declared_rows(request.inputs))
            inputs = await decoder.run(
                len(raw),
                lambda: grpc_codec.decode_inputs(request.inputs, signature, split_strings),
            )
            wanted = list(request.output_filter)
            check_outputs(signature, wanted, field="output_filter")
            _check_wanted(context)  # the model is the costliest stage: not for nobody
            outputs = await call.predict(signature.name, inputs, wanted, _timeout_ms(context))
        size = sum(array.nbytes for array in outputs.values())
        self._calls.check_answer_size(size)  # before the work of encoding it
        answer: bytes = await decoder.run(
            size, lambda: _predict_response(call, signature.name, outputs).SerializeToString()
        )
        self._calls.check_answer_size(len(answer))
        return answer

    async def GetModelMetadata(  # noqa: N802
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        route = f"/{PREDICTION_SERVICE}/GetModelMetadata"
        return await self._calls.run(context, route, lambda record: self._metadata(request, record))

    async def _metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, record: RequestRecord
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = set(request.metadata_field)
        if fields != {"signature_def"}:
            raise InvalidInputError(
                f"metadata_field must be ['signature_def'], got {sorted(fields)}"
            )
        servable = self._calls.core.resolve(_addressed(request.model_spec), record)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signatures.items():
            signatures.signature_def[name].CopyFrom(signature.definition)
        packed = any_pb2.Any()
        packed.Pack(signatures)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_answered_spec(servable, "")
        )
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    async def Classify(  # noqa: N802
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Serialized messages, as Predict's."""
        route = f"/{PREDICTION_SERVICE}/Classify"
        return await self._calls.run(
            context, route, lambda record: self._examples(request, context, "classify", record)
        )

    async def Regress(  # noqa: N802
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Serialized messages, as Predict's."""
        route = f"/{PREDICTION_SERVICE}/Regress"
        return await self._calls.run(
            context, route, lambda record: self._examples(request, context, "regress", record)
        )

    async def _examples(
        self,
        raw: bytes,
        context: grpc.aio.ServicerContext,
        method: classify_regress.Method,
        record: RequestRecord,
    ) -> bytes:
        kind = _EXAMPLE_METHODS[method]
        call, signature_name, outputs, count = await self._run_examples(
            kind, raw, context, method, record
        )
        spec = _answered_spec(call, signature_name)
        response: classification_pb2.ClassificationResponse | regression_pb2.RegressionResponse
        if method == "classify":
            response = classification_pb2.ClassificationResponse(model_spec=spec)
            for classes in classify_regress.classifications(outputs, count):
                result = response.result.classifications.add()
                for label, score in classes:
                    result.classes.add(label=label, score=score)
        else:
            response = regression_pb2.RegressionResponse(model_spec=spec)
            for value in classify_regress.regressions(outputs, count):
                response.result.regressions.add(value=value)
        answer: bytes = response.SerializeToString()
        return answer

    async def _run_examples(
        self,
        kind: type[classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest],
        raw: bytes,
        context: grpc.aio.ServicerContext,
        method: classify_regress.Method,
        record: RequestRecord,
    ) -> tuple[Call, str, dict[str, np.ndarray], int]:
        """Runs a Classify/Regress request's examples: (call, signature, outputs, count)."""
        request, split_strings = await self._calls.parse(kind, raw)
        ref = _addressed(request.model_spec)
        async with self._calls.core.admit(ref, record, method=method) as call:
            target = call.example_signature(request.model_spec.signature_name, method)
            split_examples = split_strings.get(message_split.EXAMPLES)
            rows = classify_regress.example_count(request.input, split_examples)
            call.check_rows(target.signature.name, rows)
            serialized = await self._calls.decoder.run(
                len(raw),
                lambda: classify_regress.serialized_from_proto(request.input, split_examples),
            )
            outputs = await call.run_examples(target, serialized, _timeout_ms(context))
        return call, target.signature.name, outputs, len(serialized)

    async def MultiInference(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        async def refuse(record: RequestRecord) -> None:
            raise UnimplementedError("MultiInference is not implemented by modelserve; use Predict")

        await self._calls.run(context, f"/{PREDICTION_SERVICE}/MultiInference", refuse)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, calls: CallRunner) -> None:
        self._calls = calls

    async def GetModelStatus(  # noqa: N802
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        route = f"/{MODEL_SERVICE}/GetModelStatus"
        return await self._calls.run(context, route, lambda record: self._status(request, record))

    async def _status(
        self, request: get_model_status_pb2.GetModelStatusRequest, record: RequestRecord
    ) -> get_model_status_pb2.GetModelStatusResponse:
        versions = self._calls.core.statuses(_addressed(request.model_spec), record)
        response = get_model_status_pb2.GetModelStatusResponse()
        for servable in versions:
            status = response.model_version_status.add(
                version=servable.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(servable.state.value),
            )
            status.status.error_code = grpc.StatusCode[servable.error_code].value[0]
            status.status.error_message = servable.error_message
        return response

    async def HandleReloadConfigRequest(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        async def refuse(record: RequestRecord) -> None:
            raise UnimplementedError(
                "reloading the config over gRPC is not supported; the server rescans its model "
                "directories by itself, and REST `POST /admin/reload` rescans them at once"
            )

        await self._calls.run(context, f"/{MODEL_SERVICE}/HandleReloadConfigRequest", refuse)


def add_services(
    server: grpc.aio.Server,
    core: InferenceCore,
    metrics: Metrics,
    decoder: Decoder,
    splitter: MessageSplitter,
    max_message_bytes: int,
) -> None:
    calls = CallRunner(core, metrics, decoder, splitter, max_message_bytes)
    prediction = PredictionServicer(calls)
    # The methods whose requests grow with the data, without (de)serializers: their messages
    # are parsed and built off the event loop. gRPC asks the generic handlers in order, so
    # these answer them.
    raw = {
        name: grpc.unary_unary_rpc_method_handler(getattr(prediction, name))
        for name in ("Predict", "Classify", "Regress")
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PREDICTION_SERVICE, raw),)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(calls), server)
