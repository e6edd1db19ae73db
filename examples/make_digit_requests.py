"""Writes the README's `digits` request bodies from an MNIST test image (a 7).

Run from the repository root: python examples/make_digit_requests.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
SOURCE = HERE.parent / "tests" / "fixtures" / "mnist" / "test0000_label7.png"


def main() -> None:
    pixels = np.asarray(Image.open(SOURCE).convert("L"), dtype=np.float32) / 255.0
    values = [round(float(v), 4) for v in pixels.reshape(-1)]
    image = np.array(values).reshape(28, 28, 1).tolist()
    predict = {"instances": [image]}
    infer = {
        "id": "digit-7",
        "inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": values}],
    }
    for name, body in (("digits-predict.json", predict), ("digits-infer.json", infer)):
        (HERE / name).write_text(json.dumps(body, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
