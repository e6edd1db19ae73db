"""Open Inference Protocol (KServe V2) REST: server and model metadata, readiness, infer.
These use the `serving_default` signature; an infer request's `parameters.signature_name`
picks another one (a modelserve extension)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.core.dtypes import BY_V2_NAME
from service.core.inference import Call, ModelRef, parse_version
from service.errors import UnavailableError
from service.http import v2_binary
from service.http import v2_codec as codec
from service.http.dependencies import (
    Core,
    off_loop,
    read_request_json,
    request_record,
    request_timeout_ms,
    until_disconnected,
)
from service.http.error_docs import INFER_ERRORS, METADATA_ERRORS, STATUS_ERRORS
from service.http.json_io import JSONBody, JSONDocument, respond
from service.v2 import metadata as v2_metadata
from service.v2 import model_config as v2_model_config
from service.v2 import statistics as v2_statistics

router = APIRouter(
    prefix="/v2", tags=["Open Inference Protocol (V2)"], default_response_class=JSONBody
)

_TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(BY_V2_NAME)},
        "data": {
            "type": "array",
            "description": "flat (row-major) or nested; absent for a binary tensor",
        },
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_size": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "bytes of this tensor after the JSON (binary tensor data "
                    "extension; needs the Inference-Header-Content-Length header)",
                }
            },
        },
    },
    "additionalProperties": False,
}
_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "model_name": {"type": "string", "description": "the URL's, if given"},
                        "model_version": {"type": "string", "description": "the URL's"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                    "additionalProperties": False,
                },
                "example": {
                    "id": "votes-1",
                    "inputs": [
                        {
                            "name": "votes",
                            "shape": [1, 16],
                            "datatype": "FP32",
                            "data": [1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1],
                        }
                    ],
                },
            }
        },
    }
}


_metadata_route = partial(router.get, responses=METADATA_ERRORS)
_ready_route = partial(router.get, responses=STATUS_ERRORS)
_infer_route = partial(router.post, responses=INFER_ERRORS, openapi_extra=_INFER_DOC)


@router.get("", summary="Server metadata")
async def server_metadata() -> JSONBody:
    return JSONBody(v2_metadata.server_metadata())


@router.get("/models/stats", summary="Statistics of every model (Triton's extension)")
async def all_statistics(request: Request, core: Core) -> JSONBody:
    return JSONBody(await v2_statistics.statistics(core, None, request_record(request)))


@_metadata_route("/models/{model}", summary="Model metadata (newest available version)")
async def model_metadata(model: str, request: Request, core: Core) -> JSONBody:
    ref = ModelRef(model)
    return JSONBody(v2_metadata.addressed_metadata(core, ref, request_record(request)))


@_metadata_route("/models/{model}/versions/{version}", summary="Model metadata of one version")
async def version_metadata(model: str, version: str, request: Request, core: Core) -> JSONBody:
    ref = ModelRef(model, parse_version(version))
    return JSONBody(v2_metadata.addressed_metadata(core, ref, request_record(request)))


@_metadata_route("/models/{model}/config", summary="Model configuration (Triton's extension)")
async def model_config(model: str, request: Request, core: Core) -> JSONBody:
    return JSONBody(
        v2_model_config.model_config(core.resolve(ModelRef(model), request_record(request)))
    )


@_metadata_route(
    "/models/{model}/versions/{version}/config", summary="Model configuration of one version"
)
async def version_config(model: str, version: str, request: Request, core: Core) -> JSONBody:
    ref = ModelRef(model, parse_version(version))
    return JSONBody(v2_model_config.model_config(core.resolve(ref, request_record(request))))


@_metadata_route("/models/{model}/stats", summary="Statistics of a model's versions")
async def model_statistics(model: str, request: Request, core: Core) -> JSONBody:
    ref = ModelRef(model)
    return JSONBody(await v2_statistics.statistics(core, ref, request_record(request)))


@_metadata_route("/models/{model}/versions/{version}/stats", summary="Statistics of one version")
async def version_statistics(model: str, version: str, request: Request, core: Core) -> JSONBody:
    ref = ModelRef(model, parse_version(version))
    return JSONBody(await v2_statistics.statistics(core, ref, request_record(request)))


@_ready_route("/models/{model}/ready", summary="Is the model ready (200) or not (503)?")
async def model_ready(model: str, request: Request, core: Core) -> JSONBody:
    return _readiness(request, core, ModelRef(model))


@_ready_route("/models/{model}/versions/{version}/ready", summary="Is this version ready?")
async def version_ready(model: str, version: str, request: Request, core: Core) -> JSONBody:
    return _readiness(request, core, ModelRef(model, parse_version(version)))


def _readiness(request: Request, core: Core, ref: ModelRef) -> JSONBody:
    try:
        core.resolve(ref, request_record(request))  # unknown model or version: 404
    except UnavailableError:
        return JSONBody({"name": ref.model, "ready": False}, status_code=503)
    return JSONBody({"name": ref.model, "ready": True})


@_infer_route("/models/{model}/infer", summary="Inference (newest version)")
async def model_infer(model: str, request: Request, core: Core) -> Response:
    return await _infer(request, core, ModelRef(model))


@_infer_route("/models/{model}/versions/{version}/infer", summary="Inference on one version")
async def version_infer(model: str, version: str, request: Request, core: Core) -> Response:
    return await _infer(request, core, ModelRef(model, parse_version(version)))


async def _infer(request: Request, core: Core, ref: ModelRef) -> Response:
    timeout_ms = request_timeout_ms(request)
    split = partial(v2_binary.split_body, header_length=request.headers.get(v2_binary.HEADER))
    async with core.admit(ref, request_record(request)) as call:
        infer, signature_name, inputs = await read_request_json(
            request, lambda document: _decode_infer(document, call), split=split
        )
        outputs = await until_disconnected(
            request, call.predict(signature_name, inputs, infer.output_names, timeout_ms)
        )
    size = sum(array.nbytes for array in outputs.values())
    return await off_loop(request, size, lambda: _answer(infer, outputs, call))


def _answer(infer: codec.InferRequest, outputs: dict[str, np.ndarray], call: Call) -> Response:
    """JSON, or with outputs asked for as binary: the JSON, then their bytes."""
    answer, binary = codec.encode_outputs(infer, outputs, call.model, call.version)
    json_outputs = [array for name, array in outputs.items() if not infer.wants_binary(name)]
    response = respond(answer, json_outputs)
    if not binary:
        return response
    header = bytes(response.body)
    return Response(
        header + b"".join(binary),
        media_type=v2_binary.BINARY_CONTENT_TYPE,
        headers={v2_binary.HEADER: str(len(header))},
    )


def _decode_infer(
    document: JSONDocument, call: Call
) -> tuple[codec.InferRequest, str, dict[str, np.ndarray]]:
    """The envelope, signature name and input arrays (run where the body was parsed)."""
    infer = codec.parse_infer_request(
        document.data,
        booleans_possible=document.booleans_possible,
        model=call.model,
        version=call.version,
        binary=document.binary,
    )
    signature = call.signature(infer.signature_name)
    return infer, signature.name, codec.decode_inputs(infer, signature)
