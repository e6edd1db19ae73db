"""What a model saw, for people: a grey-level image as a PNG data URL (the web page shows the
28x28 digit the model read next to the uploaded picture, so a wrong answer can be understood)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_data_url(pixels: np.ndarray) -> str:
    """uint8 [height, width] grey levels as `data:image/png;base64,...`."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
