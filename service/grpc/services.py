"""TF Serving's gRPC API (PredictionService, ModelService) from the official protos, so TF Serving
clients work unchanged. A call is one more caller of the inference core (it may share a batch with
REST requests); a failure's canonical code is its gRPC status, and the client's deadline becomes
the request's deadline in the batcher."""

from __future__ import annotations

import logging
from typing import Any, cast

import grpc
import numpy as np
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
    InvalidInputError,
    UnimplementedError,
)
from service.grpc import codec as grpc_codec
from service.grpc import message_split
from service.grpc.calls import Context, Servicer, check_wanted, observed, timeout_ms
from service.grpc.message_split import MessageSplitter
from service.metrics import Metrics

log = logging.getLogger(__name__)

# Importing the *_pb2 modules (the *_pb2_grpc ones do not) loads the services into the default
# descriptor pool, where server reflection looks them up.
PREDICTION_SERVICE: str = prediction_service_pb2.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
MODEL_SERVICE: str = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


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


class PredictionServicer(Servicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    SERVICE = PREDICTION_SERVICE

    @observed
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
            check_wanted(context)  # the model is the costliest stage: not for nobody
            outputs = await call.predict(signature.name, inputs, wanted, timeout_ms(context))

        def build() -> predict_pb2.PredictResponse:
            spec = _answered_spec(call, signature.name)
            response = predict_pb2.PredictResponse(model_spec=spec)
            for name, proto in grpc_codec.encode_outputs(outputs).items():
                response.outputs[name].CopyFrom(proto)
            return response

        return await self.serialized(outputs, build)

    @observed
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

    @observed
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

    @observed
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
            outputs = await call.run_examples(target, serialized, timeout_ms(context))
        return call, target.signature.name, outputs, len(serialized)

    @observed
    async def MultiInference(self, request: Any, context: Context, record: RequestRecord) -> None:  # noqa: N802
        raise UnimplementedError("MultiInference is not implemented by modelserve; use Predict")


class ModelServicer(Servicer, model_service_pb2_grpc.ModelServiceServicer):
    SERVICE = MODEL_SERVICE

    @observed
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

    @observed
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
