"""Clients no one here wrote, with their defaults, against a real server, each in a process of
its own: Triton's `tritonclient.http` (sync and asyncio; binary tensors both ways) answers the
same as plain V2 JSON requests."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx

from tests.conftest import REPO_ROOT
from tests.server import ok_json

pytest_plugins = ["tests.gateway_fixtures"]


def run_client(module: str, server: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", module, server.removeprefix("http://")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{module} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def json_outputs(client: httpx.Client, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    body = ok_json(client.post(f"/v2/models/{model}/infer", json={"inputs": inputs}))
    return {output["name"]: output["data"] for output in body["outputs"]}


def test_tritonclient_http_with_its_defaults(server: str, client: httpx.Client) -> None:
    got = run_client("tests.clients.tritonclient_http", server)
    assert got["live"] is True and got["ready"] is True
    assert "binary_tensor_data" in got["extensions"]
    assert got["multi_config"] == ok_json(client.get("/v2/models/multi/config"))

    multi = json_outputs(
        client,
        "multi",
        [
            {"name": "features", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
            {"name": "shift", "datatype": "INT32", "shape": [2], "data": [1, 2]},
        ],
    )
    assert set(multi) == set(got["multi_outputs"])
    for variant in ("multi_binary", "multi_json", "multi_async"):
        assert got[variant] == multi, variant

    sent = [b"abc", "h\u00e9".encode(), b"\xff\x00z"]
    texts = [value.decode("latin-1") for value in sent]  # as the script prints bytes
    assert got["text"]["echo_bytes"] == texts
    assert got["text"]["length"] == [3, 3, 3]
    assert set(got["text"]) == set(got["text_outputs"])
