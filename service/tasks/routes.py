"""The task API: `POST /api/v1/digits`, `/images`, `/sentiment` and `/party`. Each checks the
model fits the task and has queue room before reading the body, and calls it through the same
inference core as the raw protocols (so task requests share their batches)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request
from PIL import Image
from pydantic import BaseModel, ValidationError

from service.core.batching import deadline_from
from service.core.inference import Call, ModelRef
from service.core.routing import Servable
from service.core.signatures import DEFAULT_SIGNATURE
from service.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.http.dependencies import (
    Core,
    read_request_json,
    request_record,
    request_timeout_ms,
    server,
    until_disconnected,
)
from service.http.error_docs import QUEUE_FULL, error_responses
from service.http.json_io import JSONBody, JSONDocument
from service.settings import Settings
from service.tasks import schemas
from service.tasks.imagenet_format import imagenet_pixels
from service.tasks.mnist_format import BlankImageError, mnist_pixels
from service.tasks.model_assets import assets_of, require_interface, require_labels
from service.tasks.previews import png_data_url
from service.tasks.uploads import is_multipart, read_uploads, require_files
from training.digits import UNCERTAIN_BELOW

router = APIRouter(prefix="/api/v1", tags=["task API"], default_response_class=JSONBody)

Body = TypeVar("Body", bound=BaseModel)
VersionQuery = Annotated[
    int | None, Query(ge=1, description="Model version to use (default: the newest available).")
]
ERRORS = error_responses(
    {
        400: "Malformed or invalid input; the message names the field or file.",
        404: "The model (or version) is not served.",
        409: "The served model cannot answer this endpoint (e.g. random weights).",
        413: "Over a limit: body size, files or items per request, image pixels, text length.",
        415: "Wrong content type.",
        429: QUEUE_FULL,
        503: "The model is still loading.",
        504: "The request's deadline passed before the model ran.",
    }
)


@dataclass(frozen=True)
class Task:
    """What an endpoint calls: a model's signature, its input, and how many classes it scores."""

    model: str
    signature: str
    input: str
    classes: int
    output: str = "probabilities"
    needs_trained_weights: bool = False
    how_to_serve: str = ""  # said when the model is not in the repository

    def check(self, servable: Servable, settings: Settings) -> tuple[str, ...]:
        """The version's labels, once it is known to fit this task (else 409)."""
        require_interface(servable, self.signature, self.input, self.output)
        labels = require_labels(servable, self.classes)
        if (
            self.needs_trained_weights
            and assets_of(servable).random_weights
            and not settings.allow_random_weights
        ):
            raise ConflictError(
                f"model {servable.model!r} version {servable.version} has random weights "
                "(exported with `--weights none`), so its labels would be meaningless. Export "
                "it with the ImageNet weights (`modelserve train resnet50`), or start the "
                "server with --allow-random-weights for load tests."
            )
        return labels


DIGITS = Task("digits", DEFAULT_SIGNATURE, "image", classes=10)
IMAGES = Task(
    "resnet50",
    "predict_images",
    "images",
    classes=1000,
    needs_trained_weights=True,
    how_to_serve="export it with `modelserve train resnet50` (ImageNet weights) and restart",
)
SENTIMENT = Task("sentiment", DEFAULT_SIGNATURE, "text", classes=2)
PARTY = Task("votes", DEFAULT_SIGNATURE, "votes", classes=2)

# The votes model's input encoding (its model card: yes = +1, no = -1, not voted = 0).
VOTE_VALUES = {"y": 1.0, "n": -1.0, "?": 0.0}


@router.post(
    "/digits",
    summary="Recognise handwritten digits (image uploads or 28x28 arrays)",
    response_model=schemas.DigitsAnswer,
    responses=ERRORS,
    openapi_extra=schemas.json_body_doc(schemas.DigitArrays, **schemas.FILES_CONTENT),
)
async def digits(
    request: Request,
    core: Core,
    version: VersionQuery = None,
    show_input: Annotated[
        bool, Query(description="Answer each 28x28 image the model saw, as a PNG data URL.")
    ] = False,
) -> Any:
    """Upload photos or drawings of digits (any size, dark ink on light paper or light on dark)
    as `file` fields; each is converted to MNIST's format (grayscale, ink white on black, fit to
    20x20, centred by centre of mass in 28x28). Or send JSON arrays already in that format.
    An answer whose (calibrated) confidence is below 80 % is marked `uncertain`."""
    async with _admitted(request, core, DIGITS, version) as admitted:
        if is_multipart(request):
            names, pixels = await _uploaded_images(request, admitted, _mnist_digit)
        elif _is_json(request):
            arrays = await _read_json(request, schemas.DigitArrays)
            _check_items(len(arrays.images), admitted.limits)
            pixels = np.asarray(arrays.images, dtype=np.uint8)
            names = [None] * len(pixels)
        else:
            sent = request.headers.get("content-type")
            raise UnsupportedMediaTypeError(
                "expected multipart/form-data with images in `file` fields, or an "
                f"application/json body of 28x28 arrays; got {sent!r}"
            )
        batch = (pixels.astype(np.float32) / 255.0)[..., np.newaxis]
        probabilities = await admitted.predict(request, batch)
    labels = admitted.labels
    return schemas.DigitsAnswer(
        **admitted.identity(),
        predictions=[
            schemas.DigitPrediction(
                file=name,
                digit=int(labels[int(row.argmax())]),
                confidence=_float(row.max()),
                probabilities=_floats(row),
                uncertain=bool(row.max() < UNCERTAIN_BELOW),
                model_input=png_data_url(image) if show_input else None,
            )
            for name, row, image in zip(names, probabilities, pixels, strict=True)
        ],
    )


@router.post(
    "/images",
    summary="Classify photos into the 1000 ImageNet classes (resnet50)",
    response_model=schemas.ImagesAnswer,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": schemas.FILES_CONTENT}},
)
async def images(
    request: Request,
    core: Core,
    version: VersionQuery = None,
    top_k: Annotated[int, Query(ge=1, le=1000, description="Classes per image.")] = 5,
) -> Any:
    """Upload photos (JPEG, PNG, GIF, BMP or WebP, any size) as `file` fields; each answer lists
    the `top_k` most probable classes."""
    async with _admitted(request, core, IMAGES, version) as admitted:
        _, batch = await _uploaded_images(
            request, admitted, lambda image, _: imagenet_pixels(image)
        )
        probabilities = await admitted.predict(request, batch)
    labels = admitted.labels
    assets = assets_of(admitted.call.servable)
    class_ids = assets.class_ids or labels  # WordNet ids when the model ships them
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return schemas.ImagesAnswer(
        **admitted.identity(),
        warning=assets.card.get("warning") if assets.random_weights else None,
        predictions=[
            [
                schemas.ImageClass(class_id=class_ids[k], label=labels[k], score=_float(row[k]))
                for k in top
            ]
            for row, top in zip(probabilities, ranked, strict=True)
        ],
    )


@router.post(
    "/sentiment",
    summary="Is a movie review positive or negative?",
    response_model=schemas.SentimentAnswer,
    responses=ERRORS,
    openapi_extra=schemas.json_body_doc(schemas.SentimentRequest),
)
async def sentiment(request: Request, core: Core, version: VersionQuery = None) -> Any:
    """Raw review texts in; per text the label and the probability that it is positive."""
    async with _admitted(request, core, SENTIMENT, version) as admitted:
        limits = admitted.limits
        body = await _read_json(request, schemas.SentimentRequest)
        _check_items(len(body.texts), limits)
        for index, text in enumerate(body.texts):
            if len(text) > limits.max_text_chars:
                raise PayloadTooLargeError(
                    f"texts[{index}] has {len(text):,} characters; the limit is "
                    f"{limits.max_text_chars:,}"
                )
        batch = np.array([text.encode("utf-8") for text in body.texts], dtype=object)
        probabilities = await admitted.predict(request, batch)
    labels = admitted.labels
    positive = labels.index("positive") if "positive" in labels else 1
    return schemas.SentimentAnswer(
        **admitted.identity(),
        predictions=[
            schemas.SentimentPrediction(
                label=labels[int(row.argmax())],
                score=_float(row[positive]),
                probabilities=_by_label(labels, row),
            )
            for row in probabilities
        ],
    )


@router.post(
    "/party",
    summary="Party of a member of the 1984 US House from their 16 votes",
    response_model=schemas.PartyAnswer,
    responses=ERRORS,
    openapi_extra=schemas.json_body_doc(schemas.PartyRequest),
)
async def party(request: Request, core: Core, version: VersionQuery = None) -> Any:
    """Per member, the votes by bill name ("y", "n", "?"); a bill left out counts as not
    voting, as in the UCI data the model was trained on. A member needs at least one "y" or
    "n": a record without one is refused (400) instead of answered from no evidence."""
    async with _admitted(request, core, PARTY, version) as admitted:
        body = await _read_json(request, schemas.PartyRequest)
        _check_items(len(body.votes), admitted.limits)
        bills = _vote_columns(admitted.call.servable)
        encoded = [_encode_votes(record, bills, i) for i, record in enumerate(body.votes)]
        probabilities = await admitted.predict(request, np.array(encoded, dtype=np.float32))
    labels = admitted.labels
    return schemas.PartyAnswer(
        **admitted.identity(),
        predictions=[
            schemas.PartyPrediction(
                party=labels[int(row.argmax())], probabilities=_by_label(labels, row)
            )
            for row in probabilities
        ],
    )


@dataclass(frozen=True)
class Admitted:
    """A task request admitted to a model version that fits the task."""

    task: Task
    call: Call
    labels: tuple[str, ...]
    limits: Settings
    timeout_ms: float | None  # the client's deadline (X-Request-Timeout), if given

    async def predict(self, request: Request, batch: np.ndarray) -> np.ndarray:
        """The task's output for `batch`: [items, classes] probabilities."""
        task = self.task
        outputs = await until_disconnected(
            request,
            self.call.predict(task.signature, {task.input: batch}, (task.output,), self.timeout_ms),
        )
        return outputs[task.output]

    def identity(self) -> dict[str, Any]:
        return {"model": self.call.model, "version": self.call.version}


@contextlib.asynccontextmanager
async def _admitted(
    request: Request, core: Core, task: Task, version: int | None
) -> AsyncIterator[Admitted]:
    """404/409/429/503 before the body is read: the model must be there, fit, and have room;
    the version is held until the block ends."""
    if task.how_to_serve and task.model not in core.repository.model_names():
        raise NotFoundError(f"model {task.model!r} is not served: {task.how_to_serve}")
    timeout_ms = request_timeout_ms(request)
    limits = server(request).settings
    async with core.admit(ModelRef(task.model, version), request_record(request)) as call:
        yield Admitted(task, call, task.check(call.servable, limits), limits, timeout_ms)


def _is_json(request: Request) -> bool:
    """application/json, a +json type, or no content type at all."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0]
    return media_type.strip().lower().endswith(("/json", "+json"))


async def _read_json(request: Request, model: type[Body]) -> Body:
    if not _is_json(request):
        sent = request.headers.get("content-type", "")
        hint = " (curl -d sends that: add -H 'content-type: application/json')"
        raise UnsupportedMediaTypeError(
            f"expected an application/json body, got {sent!r}"
            + (hint if sent.startswith("application/x-www-form-urlencoded") else "")
        )
    return await read_request_json(request, lambda document: _validated(document, model))


def _validated(document: JSONDocument, model: type[Body]) -> Body:
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidInputError("invalid request: " + "; ".join(problems[:5]) + more) from None


def _check_items(count: int, limits: Settings) -> None:
    if count > limits.max_items:
        raise PayloadTooLargeError(f"{count} items in one request; the limit is {limits.max_items}")


async def _uploaded_images(
    request: Request, admitted: Admitted, convert: Callable[[Image.Image, str], np.ndarray]
) -> tuple[list[str | None], np.ndarray]:
    """The uploads' names and `convert(image, file name)` of each, stacked. One image at a
    time, so a request of large photos never holds them all at once; each waits for room in the
    decode pool's pixel budget until the request's deadline (the model's own by default)."""
    limits = admitted.limits
    uploads = await read_uploads(
        request, max_bytes=limits.max_request_bytes, max_files=limits.max_upload_files
    )
    require_files(uploads)
    decoder = server(request).parts.image_decoder
    default_ms = admitted.call.servable.config.batching.timeout_ms
    deadline = deadline_from(admitted.timeout_ms, default_ms)
    loop = asyncio.get_running_loop()
    rows = [  # one at a time
        await decoder.decode(
            upload, convert, max_pixels=limits.max_image_pixels, timeout=deadline - loop.time()
        )
        for upload in uploads
    ]
    return [upload.name for upload in uploads], np.stack(rows)


def _mnist_digit(image: Image.Image, name: str) -> np.ndarray:
    try:
        return mnist_pixels(image)
    except BlankImageError as exc:
        raise InvalidInputError(f"file {name!r}: {exc}") from None


def _vote_columns(servable: Servable) -> list[str]:
    columns = assets_of(servable).card.get("vote_columns")
    if not isinstance(columns, list) or len(columns) != 16:
        raise ConflictError(
            f"model {servable.model!r} version {servable.version} has no `vote_columns` (16 "
            "bill names) in its model card"
        )
    return [str(column) for column in columns]


def _encode_votes(record: Mapping[str, str], bills: list[str], index: int) -> list[float]:
    unknown = sorted(set(record) - set(bills))
    if unknown:
        raise InvalidInputError(
            f"votes[{index}]: unknown bill name(s) {', '.join(map(repr, unknown))}; valid "
            f"names: {', '.join(bills)}"
        )
    if not any(vote in ("y", "n") for vote in record.values()):
        # All 16 inputs would be 0: the model has no evidence, and whatever it answers for
        # that point (a confident party, from where its weights happen to put zero) is noise.
        raise InvalidInputError(
            f"votes[{index}]: no yes or no vote; at least one 'y' or 'n' is needed to "
            "tell a party (a record of only '?' or no bills carries no evidence)"
        )
    return [VOTE_VALUES[record.get(bill, "?")] for bill in bills]


def _floats(row: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that round-trip (0.1, not 0.10000000149)."""
    return [float(text) for text in row.astype(str)]


def _float(value: np.floating[Any]) -> float:
    return float(str(value))


def _by_label(labels: Sequence[str], row: np.ndarray) -> dict[str, float]:
    return dict(zip(labels, _floats(row), strict=True))
