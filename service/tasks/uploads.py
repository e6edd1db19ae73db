"""Image uploads: multipart `file` fields read within the limits (body size as it streams, file
count per part, pixels from the header before decoding), then opened with Pillow, only in the
formats browsers and phones produce (a smaller attack surface). Every rejection names the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.http.body import limited_stream

log = logging.getLogger(__name__)

FILE_FIELD = "file"
PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_BMP_TYPES = {"image/bmp", "image/x-bmp", "image/x-ms-bmp"}
# Besides the image types, what clients send when they do not know (curl -F without ;type=).
ACCEPTED_TYPES = frozenset(
    {"image/jpeg", "image/pjpeg", "image/png", "image/gif", "image/webp", *_BMP_TYPES}
    | {"", "application/octet-stream"}
)
ACCEPTED = "JPEG, PNG, GIF, BMP or WebP"

# The pixel limit is ours (max_image_pixels). Pillow's own check would warn below twice its
# fixed limit, and each distinct size warned about stays in the warnings registry for good.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Upload:
    name: str  # as the client named the file, for messages
    content_type: str
    data: bytes


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_uploads(request: Request, *, max_bytes: int, max_files: int) -> list[Upload]:
    """The `file` parts of a multipart/form-data body, in order."""
    if not is_multipart(request):
        raise UnsupportedMediaTypeError(
            f"expected multipart/form-data with images in `{FILE_FIELD}` fields, got "
            f"{request.headers.get('content-type') or 'no content type'!r}"
        )
    parser = _Parser(
        request.headers, limited_stream(request, max_bytes), max_files=max_files, max_fields=0
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise _form_error(exc.message, max_files) from None
    try:
        if not parser.ended:
            raise InvalidInputError(
                "malformed multipart body: it ends before its closing boundary (truncated?)"
            )
        return [
            await _upload(field, value, index)
            for index, (field, value) in enumerate(form.multi_items())
        ]
    finally:
        await form.close()


class _Parser(MultiPartParser):
    """Starlette's parser, noting whether the body reached its closing boundary: python-multipart
    does not check it, so a truncated body would silently lose its last (partial) file."""

    ended = False

    def on_end(self) -> None:
        self.ended = True


def _form_error(message: str, max_files: int) -> Exception:
    if message.startswith("Too many files"):
        return PayloadTooLargeError(f"more than {max_files} files in one request")
    if message.startswith("Too many fields"):
        return InvalidInputError(
            f"only file fields are accepted (named `{FILE_FIELD}`); options such as top_k go in "
            "the query string"
        )
    return InvalidInputError(f"malformed multipart body: {message}")


async def _upload(field: str, value: UploadFile | str, index: int) -> Upload:
    assert isinstance(value, UploadFile)  # max_fields=0: the parser refuses plain fields
    name = value.filename or f"file #{index + 1}"
    if field != FILE_FIELD:
        raise InvalidInputError(f"unexpected field {field!r} ({name!r}); name each file `file`")
    content_type = (value.content_type or "").split(";")[0].strip().lower()
    return Upload(name=name[:200], content_type=content_type, data=await value.read())


def require_files(uploads: Sequence[Upload]) -> None:
    if not uploads:
        raise InvalidInputError(f"no files: upload one or more images as `{FILE_FIELD}` fields")


def open_image(upload: Upload, *, max_pixels: int) -> Image.Image:
    """The upload decoded by Pillow (first frame), or a 4xx that names the file."""
    return load_image(probe_image(upload, max_pixels=max_pixels), upload.name)


def probe_image(upload: Upload, *, max_pixels: int) -> Image.Image:
    """The upload opened but not decoded (Pillow reads the header only), within the pixel
    limit, or a 4xx that names the file: its size says what decoding it will cost."""
    name = upload.name
    if upload.content_type not in ACCEPTED_TYPES:
        raise UnsupportedMediaTypeError(
            f"file {name!r} is declared {upload.content_type!r}; send {ACCEPTED} images"
        )
    if not upload.data:
        raise InvalidInputError(f"file {name!r} is empty")
    try:
        image = Image.open(BytesIO(upload.data), formats=PILLOW_FORMATS)
    except Exception:  # Pillow's parsers raise many types on hostile bytes
        raise InvalidInputError(f"file {name!r} is not a {ACCEPTED} image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"image {name!r} ({width}x{height}) exceeds the {max_pixels:,} pixel limit"
        )
    if width == 0 or height == 0:
        raise InvalidInputError(f"file {name!r} has no pixels ({width}x{height})")
    return image


def load_image(image: Image.Image, name: str) -> Image.Image:
    """`image` (from probe_image) decoded, or a 400 naming the file if it is corrupt."""
    try:
        image.load()
    except Exception as exc:
        log.debug("cannot decode %r: %s", name, exc)
        raise InvalidInputError(
            f"file {name!r} is a corrupt or truncated {image.format} image"
        ) from None
    return image
