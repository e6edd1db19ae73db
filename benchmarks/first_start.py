"""How long `make serve`'s first start takes: `modelserve serve` on a copy of the repository's
models without `resnet50`, exporting it in the background from a local weights file.

Each run copies models/ (digits, sentiment, votes) to a fresh folder, empties Keras' cache
(KERAS_HOME in the run's folder) and starts `modelserve serve --resnet50-weights PATH`; it polls
/readyz every 0.1 s and records when the server is ready (the three shipped models serve) and
when resnet50 serves, from the start of the command. Prints one row per run and the median.

    python benchmarks/first_start.py --weights resnet50_weights_tf_dim_ordering_tf_kernels.h5

Without Keras' real file (no internet), `--random-weights` makes a stand-in of the same size:
Keras' ResNet50 with random weights saved as .h5. The download itself (98 MB) is not timed: it
depends on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import free_port  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
MODELSERVE = Path(sys.executable).parent / "modelserve"
SHIPPED = ("digits", "sentiment", "votes")


def random_weights(folder: Path) -> Path:
    """Keras' ResNet50 with random weights, saved as a weights file (~103 MB)."""
    from training import resnet50

    model = resnet50.build_model(resnet50.Weights(path=None, origin="benchmark"), seed=0)
    path = folder / "resnet50-random.weights.h5"
    model.save_weights(path)
    return path


def one_start(weights: Path, models: Path, workdir: Path, timeout: float) -> dict[str, float]:
    repo = workdir / "models"
    for name in SHIPPED:
        shutil.copytree(models / name, repo / name)
    port = free_port()
    env = {
        **os.environ,
        "KERAS_HOME": str(workdir / "keras"),
        "MODELSERVE_AUTO_EXPORT": "1",
        "MODELSERVE_LOG_FORMAT": "json",
    }
    command = [str(MODELSERVE), "serve", "--model-base-path", str(repo), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--grpc-port", str(free_port())]
    command += ["--resnet50-weights", str(weights)]
    log = workdir / "serve.log"
    start = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    times: dict[str, float] = {}
    try:
        while "resnet50" not in times:
            if time.monotonic() - start > timeout or server.poll() is not None:
                raise RuntimeError(f"no resnet50 within {timeout} s; see {log}")
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                times.setdefault("ready", time.monotonic() - start)
                if answer.json()["models"].get("resnet50"):
                    times["resnet50"] = time.monotonic() - start
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    times["export"] = _logged_export_seconds(log)
    return times


def _logged_export_seconds(log: Path) -> float:
    """The export process's own time ("exported version 1 in 9.1 s"), from the JSON log."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "exported version" in line:
            message = json.loads(line)["message"]
            return float(message.split(" in ")[1].split(" s")[0])
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a local copy of Keras' weights file")
    source.add_argument(
        "--random-weights", action="store_true", help="a random-weights stand-in, same size"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-start-") as scratch:
        weights = args.weights or random_weights(Path(scratch))
        print(f"weights: {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
        print("| run | server ready (3 models) | resnet50 serving | export process |")
        print("| ---: | ---: | ---: | ---: |")
        rows = []
        for run in range(1, args.runs + 1):
            workdir = Path(scratch) / f"run{run}"
            times = one_start(weights, args.models, workdir, args.timeout)
            rows.append(times)
            print(
                f"| {run} | {times['ready']:.1f} s | {times['resnet50']:.1f} s "
                f"| {times['export']:.1f} s |",
                flush=True,
            )
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(
            f"| median | {median['ready']:.1f} s | {median['resnet50']:.1f} s "
            f"| {median['export']:.1f} s |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
