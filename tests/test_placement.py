"""Device placement: the pure choice of devices (`place_instances`), a model really computing on
the virtual CPU it was placed on, and a `modelserve serve` process spreading instances over
MODELSERVE_VIRTUAL_DEVICES=3 logical CPUs.

Virtual devices must be configured before TensorFlow initialises, which has already happened
in the pytest process, so everything that needs them runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.placement import DeviceSetup, place_instances
from service.core.serving_config import PlacementConfig
from tests.conftest import REPO_ROOT
from tests.saved_models import export_affine, write_config
from tests.server import error_message, free_port, wait_for
from tests.test_cli_serve import serve_process

CPU0, CPU1, CPU2 = "/device:CPU:0", "/device:CPU:1", "/device:CPU:2"
GPU0, GPU1 = "/device:GPU:0", "/device:GPU:1"


# --- place_instances: the pure choice ------------------------------------------------------


def place(
    device: str,
    devices: list[str],
    model_dir: Path,
    instances: int = 1,
    auto_gpu_min_mb: float = 20.0,
) -> list[str]:
    config = PlacementConfig(device=device, instances=instances)
    return place_instances(config, devices, model_dir, DeviceSetup(auto_gpu_min_mb=auto_gpu_min_mb))


def model_of_size(path: Path, megabytes: float) -> Path:
    """A model folder whose variables take `megabytes` MiB (what `auto` looks at)."""
    variables = path / "variables"
    variables.mkdir(parents=True)
    (variables / "variables.data-00000-of-00001").write_bytes(b"\0" * int(megabytes * 2**20))
    (variables / "variables.index").write_bytes(b"")
    return path


def test_instances_spread_round_robin_over_the_cpus(tmp_path: Path) -> None:
    cpus = [CPU0, CPU1]
    assert place("cpu", cpus, tmp_path, instances=5) == [CPU0, CPU1, CPU0, CPU1, CPU0]
    assert place("cpu", cpus, tmp_path, instances=1) == [CPU0]
    # GPUs in the list are not CPUs
    assert place("cpu", [CPU0, GPU0, CPU1], tmp_path, instances=3) == [CPU0, CPU1, CPU0]


def test_numbered_device_pins_every_instance(tmp_path: Path) -> None:
    devices = [CPU0, CPU1, CPU2, GPU0, GPU1]
    assert place("cpu:1", devices, tmp_path, instances=3) == [CPU1, CPU1, CPU1]
    assert place("gpu:1", devices, tmp_path, instances=2) == [GPU1, GPU1]
    assert place("gpu", devices, tmp_path, instances=3) == [GPU0, GPU1, GPU0]
    # the config normalises spelling before placement sees it
    assert place(" CPU:2 ", devices, tmp_path) == [CPU2]


def test_auto_picks_gpus_for_large_models_when_there_are_gpus(tmp_path: Path) -> None:
    big = model_of_size(tmp_path / "big", 2.0)
    small = model_of_size(tmp_path / "small", 1.5)
    no_variables = tmp_path / "none"
    no_variables.mkdir()
    with_gpus = [CPU0, GPU0, GPU1]
    assert place("auto", with_gpus, big, instances=2, auto_gpu_min_mb=2.0) == [GPU0, GPU1]
    assert place("auto", with_gpus, small, instances=2, auto_gpu_min_mb=2.0) == [CPU0, CPU0]
    assert place("auto", with_gpus, no_variables, auto_gpu_min_mb=2.0) == [CPU0]
    assert place("auto", [CPU0, CPU1], big, instances=2, auto_gpu_min_mb=2.0) == [CPU0, CPU1]
    # the default threshold (20 MB): a 2 MB model stays on the CPU
    assert place("auto", with_gpus, big) == [CPU0]
    # ...and any model goes to the GPUs when the threshold is 0
    assert place("auto", with_gpus, no_variables, auto_gpu_min_mb=0) == [GPU0]


def test_gpu_without_gpus_is_a_clear_error(tmp_path: Path) -> None:
    for device in ("gpu", "gpu:0"):
        with pytest.raises(ValueError, match="GPU") as raised:
            place(device, [CPU0, CPU1], tmp_path)
        assert repr(device) in str(raised.value)


def test_missing_numbered_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        place("cpu:5", [CPU0, CPU1], tmp_path)
    message = str(raised.value)
    assert "'cpu:5'" in message and "not found" in message
    assert CPU0 in message and CPU1 in message  # lists what there is
    with pytest.raises(ValueError, match="'gpu:2'"):
        place("gpu:2", [CPU0, GPU0, GPU1], tmp_path)


def test_placement_config_rejects_unknown_devices() -> None:
    for device in ("tpu", "gpu:", "cpu:x", "gpu0"):
        with pytest.raises(ValueError, match="device must be"):
            PlacementConfig(device=device)
    with pytest.raises(ValueError):
        PlacementConfig(instances=0)


# --- one process: a model computes on the virtual CPU it was placed on ----------------------

DEVICE_SCRIPT = """
import json, sys
from pathlib import Path

import numpy as np

from service.core.placement import DeviceSetup, configure_devices
from service.core.runtime import LoadedModel

devices = configure_devices(DeviceSetup(virtual_cpus=3))
found = {"devices": devices}
for device in ("/device:CPU:2", "/device:CPU:1"):
    model = LoadedModel("plus", 1, Path(sys.argv[1]), device=device)
    outputs = model.call_tensors("serving_default", {"x": np.array([1.0, 4.0], np.float32)})
    found[device] = {"device": outputs["y"].device, "y": outputs["y"].numpy().tolist()}
print("PLACEMENT-RESULT " + json.dumps(found))
"""


def test_loaded_model_computes_on_its_virtual_cpu(tmp_path: Path) -> None:
    model_dir = export_affine(tmp_path, "plus", 1, slope=0.5, offset=2.0)
    result = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT, str(model_dir)],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("PLACEMENT-RESULT ")]
    found = json.loads(line.removeprefix("PLACEMENT-RESULT "))
    assert found["devices"] == [CPU0, CPU1, CPU2], found
    for device in (CPU2, CPU1):
        assert found[device]["device"].endswith(device.removeprefix("/device:")), found
        assert found[device]["y"] == [2.5, 4.0], found


# --- end to end: `modelserve serve` with three virtual CPUs -----------------------------------


def models_overview(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/models", timeout=10)
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()["models"]}


def settled(url: str, process: subprocess.Popen[str]) -> dict[str, dict[str, Any]] | None:
    """The overview once spread and pinned serve and needs_gpu has failed; None before."""
    if process.poll() is not None:
        output = process.stdout.read() if process.stdout else ""
        pytest.fail(f"server exited with {process.returncode}:\n{output}")
    try:
        models = models_overview(url)
    except httpx.TransportError:
        return None
    gpu_versions = models.get("needs_gpu", {}).get("versions", [])
    if (
        models.get("spread", {}).get("ready")
        and models.get("pinned", {}).get("ready")
        and gpu_versions
        and gpu_versions[0]["state"] == "END"
    ):
        return models
    return None


def test_serve_places_instances_on_virtual_cpus(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_affine(repo, "spread", 1, slope=0.5, offset=2.0)
    export_affine(repo, "pinned", 1, slope=3.0, offset=1.0)
    export_affine(repo, "needs_gpu", 1)
    config = write_config(
        tmp_path / "serving.yaml",
        [
            {"name": "spread", "placement": {"device": "cpu", "instances": 3}},
            {"name": "pinned", "placement": {"device": "cpu:2"}},
            {"name": "needs_gpu", "placement": {"device": "gpu"}},
        ],
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning")
    args += ("--config", str(config), "--model-base-path", str(repo), "--poll-interval", "0")
    # One process: placement is the model process's own (the same LocalModels with workers),
    # and with workers one could still be in its reconnect backoff (up to 1 s) after the models
    # settle, answering /readyz with no models (CI saw it). test_workers covers the workers.
    args += ("--workers", "0")
    env = {"MODELSERVE_VIRTUAL_DEVICES": "3"}
    with serve_process(*args, env=env) as process:
        models = wait_for(
            lambda: settled(url, process), timeout=180, what="models to load", interval=0.3
        )
        (spread,) = models["spread"]["versions"]
        assert spread["state"] == "AVAILABLE", spread
        assert [i["device"] for i in spread["instances"]] == [CPU0, CPU1, CPU2], spread
        assert [i["instance"] for i in spread["instances"]] == [0, 1, 2], spread
        (pinned,) = models["pinned"]["versions"]
        assert [i["device"] for i in pinned["instances"]] == [CPU2], pinned

        (failed,) = models["needs_gpu"]["versions"]
        assert models["needs_gpu"]["ready"] is False
        assert "GPU" in (failed["error"] or ""), failed
        unavailable = httpx.post(f"{url}/v1/models/needs_gpu:predict", json={"instances": [1.0]})
        error_message(unavailable, 503)
        assert httpx.get(f"{url}/readyz").json()["models"] == {
            "spread": True,
            "pinned": True,
            "needs_gpu": False,
        }

        def predict(model: str, x: float) -> list[float]:
            response = httpx.post(
                f"{url}/v1/models/{model}:predict", json={"instances": [x, x + 1]}, timeout=60
            )
            assert response.status_code == 200, response.text
            values: list[float] = response.json()["predictions"]
            return values

        xs = [float(i) for i in range(30)]
        with ThreadPoolExecutor(8) as pool:
            spread_answers = list(pool.map(lambda x: predict("spread", x), xs))
            pinned_answers = list(pool.map(lambda x: predict("pinned", x), xs))
        for x, spread_answer, pinned_answer in zip(xs, spread_answers, pinned_answers, strict=True):
            assert spread_answer == [0.5 * x + 2.0, 0.5 * (x + 1) + 2.0]
            assert pinned_answer == [3.0 * x + 1.0, 3.0 * (x + 1) + 1.0]

        models = models_overview(url)
        (spread,) = models["spread"]["versions"]
        batches = [i["batches"] for i in spread["instances"]]
        assert all(b > 0 for b in batches), spread  # every instance took work
        assert sum(batches) == spread["batching"]["serving_default"]["batches"], spread
        assert spread["batching"]["serving_default"]["rows"] == 2 * len(xs), spread
        (pinned,) = models["pinned"]["versions"]
        assert pinned["instances"][0]["batches"] > 0, pinned
