"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest): status, metadata,
predict/classify/regress, so existing clients work unchanged.

The method follows a colon in the last path segment (`/v1/models/digits:predict`), and GET and
POST routes share path templates, so that segment's convertor picks the route: a known method
makes it a call (GET on it: 405), no colon a status (POST on it: 405), any other colon either
(GET says model names have no colon, POST names the known methods).
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Request
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response

from service.core import classify_regress
from service.core.inference import Call, ModelRef, parse_version
from service.errors import NotFoundError
from service.http import tfserving_codec as codec
from service.http.dependencies import (
    Core,
    answer_json,
    read_request_json,
    request_record,
    request_timeout_ms,
    until_disconnected,
)
from service.http.error_docs import METADATA_ERRORS, PREDICT_ERRORS, STATUS_ERRORS
from service.http.json_io import JSONBody, JSONDocument

METHODS = ("predict", "classify", "regress")


class _Call(StringConvertor):
    """`<model, version or label>:<method>`, any method (an unknown one: a 404 naming them)."""

    regex = "[^/]*:[^/]*"


class _Target(StringConvertor):
    """A model, version or label: a last segment that is not a call of a known method."""

    regex = f"(?![^/]*:(?:{'|'.join(METHODS)})$)[^/]+"


# starlette's registry is global; these names are this module's
register_url_convertor("tfs_call", _Call())
register_url_convertor("tfs_target", _Target())

router = APIRouter(prefix="/v1/models", tags=["TF Serving REST"], default_response_class=JSONBody)

_PREDICT_EXAMPLES = {
    "row format (digits: one 28x28x1 image per instance)": {"instances": [[[[0.0]] * 28] * 28]},
    "columnar format (votes: 16 votes, y=1, n=-1, ?=0)": {
        "inputs": {"votes": [[1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1]]}
    },
    "strings (sentiment)": {"instances": ["A wonderful, moving film."]},
    ":classify / :regress (tf.Example features; a signature with that method)": {
        "signature_name": "classify",
        "context": {"country": "NZ"},
        "examples": [{"age": 41, "income": 52.5}, {"age": 23, "tags": ["a", "b"]}],
    },
}
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "signature_name": {"type": "string"},
                        "instances": {"type": "array", "description": ":predict, row format"},
                        "inputs": {"description": ":predict, columnar format"},
                        "examples": {"type": "array", "description": ":classify and :regress"},
                        "context": {"type": "object", "description": ":classify and :regress"},
                    },
                    # one body schema for the three methods: what each of them requires
                    "anyOf": [{"required": [key]} for key in ("instances", "inputs", "examples")],
                    "additionalProperties": False,
                },
                "examples": {name: {"value": v} for name, v in _PREDICT_EXAMPLES.items()},
            }
        },
    }
}


_status_route = partial(router.get, responses=STATUS_ERRORS)
_metadata_route = partial(router.get, responses=METADATA_ERRORS)
_method_route = partial(router.post, responses=PREDICT_ERRORS, openapi_extra=_PREDICT_DOC)


@_status_route("/{model:tfs_target}", summary="Status of every version of a model")
async def model_status(model: str, request: Request, core: Core) -> JSONBody:
    if ":" in model:  # a method name mistyped, or a GET meant as a POST
        raise NotFoundError(
            f"no model {model[:200]!r}: model names have no ':'; call a model with "
            "POST /v1/models/<model>:predict (or :classify / :regress)"
        )
    return _status(request, core, ModelRef(model))


@_status_route("/{model}/versions/{version:tfs_target}", summary="Status of one version")
async def version_status(model: str, version: str, request: Request, core: Core) -> JSONBody:
    return _status(request, core, ModelRef(model, parse_version(version)))


@_status_route(
    "/{model}/labels/{label:tfs_target}", summary="Status of the version a label points to"
)
async def label_status(model: str, label: str, request: Request, core: Core) -> JSONBody:
    return _status(request, core, ModelRef(model, label=label))


def _status(request: Request, core: Core, ref: ModelRef) -> JSONBody:
    statuses = [
        {
            "version": str(servable.version),
            "state": servable.state.value,
            "status": {"error_code": servable.error_code, "error_message": servable.error_message},
        }
        for servable in core.statuses(ref, request_record(request))
    ]
    return JSONBody({"model_version_status": statuses})


@_metadata_route("/{model}/metadata", summary="Signature defs of the newest available version")
async def model_metadata(model: str, request: Request, core: Core) -> JSONBody:
    return _metadata(request, core, ModelRef(model))


@_metadata_route("/{model}/versions/{version}/metadata", summary="Signature defs of one version")
async def version_metadata(model: str, version: str, request: Request, core: Core) -> JSONBody:
    return _metadata(request, core, ModelRef(model, parse_version(version)))


@_metadata_route("/{model}/labels/{label}/metadata", summary="Signature defs of a labelled version")
async def label_metadata(model: str, label: str, request: Request, core: Core) -> JSONBody:
    return _metadata(request, core, ModelRef(model, label=label))


def _metadata(request: Request, core: Core, ref: ModelRef) -> JSONBody:
    servable = core.resolve(ref, request_record(request))
    signature_defs = {name: sig.as_json() for name, sig in servable.signatures.items()}
    spec = {"name": servable.model, "signature_name": "", "version": str(servable.version)}
    return JSONBody(
        {"model_spec": spec, "metadata": {"signature_def": {"signature_def": signature_defs}}}
    )


@_method_route(
    "/{model_method:tfs_call}", summary="model:predict | :classify | :regress (newest version)"
)
async def model_method(model_method: str, request: Request, core: Core) -> Response:
    model, method = _split_method(model_method)
    return await _call(request, core, method, ModelRef(model))


@_method_route(
    "/{model}/versions/{version_method:tfs_call}",
    summary="model/versions/N:predict | :classify | :regress",
)
async def version_method(model: str, version_method: str, request: Request, core: Core) -> Response:
    version, method = _split_method(version_method)
    return await _call(request, core, method, ModelRef(model, parse_version(version)))


@_method_route(
    "/{model}/labels/{label_method:tfs_call}",
    summary="model/labels/L:predict | :classify | :regress",
)
async def label_method(model: str, label_method: str, request: Request, core: Core) -> Response:
    label, method = _split_method(label_method)
    return await _call(request, core, method, ModelRef(model, label=label))


def _split_method(segment: str) -> tuple[str, str]:
    target, colon, method = segment.rpartition(":")
    if not colon or method not in METHODS:
        raise NotFoundError(
            f"no such method in {segment!r}; use <model>:predict (or :classify / :regress)"
        )
    return target, method


async def _call(request: Request, core: Core, method: str, ref: ModelRef) -> Response:
    if method != "predict":
        return await _call_examples(request, core, cast(classify_regress.Method, method), ref)
    timeout_ms = request_timeout_ms(request)
    async with core.admit(ref, request_record(request)) as call:  # before reading the body
        predict, signature_name, inputs = await read_request_json(
            request, lambda document: _decode_predict(document, call), allow_non_finite=True
        )
        outputs = await until_disconnected(
            request, call.predict(signature_name, inputs, timeout_ms=timeout_ms)
        )
    return await answer_json(
        request, outputs, lambda: codec.encode_outputs(predict, outputs, predict.rows)
    )


def _decode_predict(
    document: JSONDocument, call: Call
) -> tuple[codec.PredictRequest, str, dict[str, np.ndarray]]:
    """The envelope, signature name and input arrays (run where the body was parsed)."""
    predict = codec.parse_predict_request(
        document.data, booleans_possible=document.booleans_possible
    )
    signature = call.signature(predict.signature_name)
    return predict, signature.name, codec.decode_inputs(predict, signature)


async def _call_examples(
    request: Request, core: Core, method: classify_regress.Method, ref: ModelRef
) -> Response:
    """:classify / :regress: tf.Example features in JSON, TF Serving's `result` out."""
    timeout_ms = request_timeout_ms(request)
    async with core.admit(ref, request_record(request), method=method) as call:  # 501 first
        signature_name, serialized = await read_request_json(
            request,
            lambda document: classify_regress.serialized_from_json(document.data),
            allow_non_finite=True,
        )
        target = call.example_signature(signature_name or "", method)
        outputs = await until_disconnected(
            request, call.run_examples(target, serialized, timeout_ms)
        )
    results = (
        classify_regress.classifications if method == "classify" else classify_regress.regressions
    )
    return await answer_json(
        request, outputs, lambda: {"result": results(outputs, len(serialized))}
    )
