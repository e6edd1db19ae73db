"""Photos into ResNet50's input the way Keras' own example does it:
`img_to_array(load_img(path, target_size=(224, 224)))` (PIL: convert to RGB, nearest-neighbour
resize, aspect ratio not kept), plus the EXIF orientation a phone photo asks for, which
`load_img` ignores. The model's float signature applies `preprocess_input` in the graph."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

SIZE = 224


def imagenet_pixels(image: Image.Image) -> np.ndarray:
    """float32 [224, 224, 3], RGB in 0..255."""
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.float32)
