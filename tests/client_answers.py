"""Plain V2 JSON requests' answers in the form the client scripts of tests/clients print, so a
test compares what a client got with what the server answers plain JSON: every output as
{"datatype", "shape", "data"} with `data` flat and BYTES elements as latin-1 text of their bytes
(any byte survives)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Sequence
from typing import Any

import httpx

from tests.conftest import REPO_ROOT
from tests.server import ok_json

# `multi`: sum = features + shift per row ([[2, 3, 4], [6, 7, 8]]), count = 3 per row
MULTI_INPUTS = [
    {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
    {"name": "shift", "datatype": "INT32", "shape": [2], "data": [1, 2]},
]


def latin1(element: Any) -> str:
    """A V2 JSON BYTES element (UTF-8 text, or {"b64": ...} for other bytes) as latin-1 text."""
    raw = base64.b64decode(element["b64"]) if isinstance(element, dict) else element.encode()
    return raw.decode("latin-1")


def v2_tensors(client: httpx.Client, path: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """POST `inputs` as V2 JSON to `path` (.../infer); the answer's outputs by name."""
    answer = ok_json(client.post(path, json={"inputs": inputs}))
    tensors = {}
    for output in answer["outputs"]:
        data = output["data"]
        if output["datatype"] == "BYTES":
            data = [latin1(element) for element in data]
        tensors[output["name"]] = {
            "datatype": output["datatype"],
            "shape": output["shape"],
            "data": data,
        }
    return tensors


def run_client(command: Sequence[str], timeout: float = 120) -> dict[str, Any]:
    """Runs a client script in a process of its own; what it printed last, as JSON."""
    done = subprocess.run(
        list(command), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    answers: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answers
