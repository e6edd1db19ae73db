"""Writes the README's `digits` requests from an MNIST test image (a 7): the TF Serving and V2
bodies, the task API's JSON body, and `seven.png`, the same digit as a photo of paper would
show it (black on white, larger, off-centre) for the upload examples.

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
    task = {"images": [np.asarray(Image.open(SOURCE).convert("L")).tolist()]}
    bodies = (
        ("digits-predict.json", predict),
        ("digits-infer.json", infer),
        ("digits-task.json", task),
    )
    for name, body in bodies:
        (HERE / name).write_text(json.dumps(body, separators=(",", ":")) + "\n")
    ink = 255 - np.asarray(
        Image.open(SOURCE).convert("L").resize((112, 112), Image.Resampling.BICUBIC)
    )
    paper = np.full((160, 200), 255, dtype=np.uint8)
    paper[12:124, 60:172] = ink
    Image.fromarray(paper).save(HERE / "seven.png")


if __name__ == "__main__":
    main()
