"""The Locust load tests (loadtests/): shapes, thresholds and payloads in process, and a real
headless Locust run (a subprocess) against a real server: the CI smoke load of
docs/load-tests.md, which must pass its thresholds, and a run that must fail them."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import training.data
from loadtests import payloads, shapes
from loadtests.gate import Thresholds, judge
from service.settings import Settings
from tests.conftest import MODELS_DIR, REPO_ROOT
from tests.server import running_server
from tests.task_models import export_standin, standin_model
from tests.test_metrics import Scrape, moved

LOCUST = Path(sys.executable).parent / "locust"
ROUTES = [
    "/v1/models/digits:predict",
    "/v1/models/sentiment:predict",
    "/v1/models/votes:predict",
    "/v1/models/resnet50:predict",
    "/v2/models/digits/infer",
    "/v2/models/sentiment/infer",
    "/v2/models/votes/infer",
    "/api/v1/digits",
    "/api/v1/images",
    "/api/v1/sentiment",
    "/api/v1/party",
]

# -- shapes ---------------------------------------------------------------------------------


def test_step_ramp_adds_users_per_step_up_to_a_partial_last_step() -> None:
    stages = shapes.step_ramp(step_users=4, step_seconds=30, max_users=10, spawn_rate=8)
    assert [(s.until, s.users) for s in stages] == [(30, 4), (60, 8), (90, 10)]
    assert [shapes.stage_at(stages, t).users for t in (0, 29.9, 30, 89.9)] == [4, 4, 8, 10]  # type: ignore[union-attr]
    assert shapes.stage_at(stages, 90) is None  # the run ends after the last step
    assert shapes.duration(stages) == 90


def test_spike_rises_within_a_second_and_recovers_as_long_as_before() -> None:
    stages = shapes.spike(users=5, spike_users=45, spike_at=20, spike_seconds=10, spawn_rate=2)
    assert [(s.until, s.users) for s in stages] == [(20, 5), (30, 45), (50, 5)]
    assert stages[1].spawn_rate == 40  # the 40 extra users arrive within one second


def test_soak_holds_its_users_for_the_run_time_or_until_stopped() -> None:
    assert shapes.stage_at(shapes.soak(6, 60, 6), 59.9) == shapes.Stage(60, 6, 6)
    assert shapes.stage_at(shapes.soak(6, 60, 6), 60) is None
    assert shapes.stage_at(shapes.soak(6, None, 6), 1e9) is not None


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: shapes.step_ramp(0, 30, 10, 1), "--step-users >= 1"),
        (lambda: shapes.step_ramp(8, 30, 4, 1), "--max-users >= --step-users"),
        (lambda: shapes.step_ramp(4, 0, 8, 1), "--step-seconds > 0"),
        (lambda: shapes.spike(10, 10, 5, 5, 1), "--spike-users > --users"),
        (lambda: shapes.spike(1, 10, 0, 5, 1), "--spike-at"),
    ],
)
def test_impossible_shapes_are_refused_naming_the_option(make: object, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace(">", ".").replace("-", ".")):
        make()  # type: ignore[operator]


# -- thresholds -----------------------------------------------------------------------------


def test_thresholds_pass_and_fail_on_the_failure_ratio_and_p95() -> None:
    both = Thresholds(max_fail_ratio=0.01, max_p95_ms=200)
    assert judge(1000, 0.01, 200, both).passed  # at the threshold is within it
    failed = judge(1000, 0.02, 250, both)
    assert not failed.passed
    assert failed.reasons == [
        "failure ratio 2.00% is above --max-fail-ratio 1.00%",
        "p95 250 ms is above --max-p95-ms 200",
    ]
    assert judge(1000, 0.5, 1e6, Thresholds()).passed  # no thresholds: nothing to judge
    assert judge(0, 0.0, 0.0, both).reasons == ["no request was made"]


# -- payloads -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bodies() -> payloads.Bodies:
    return payloads.Bodies(payloads.load_corpus(size=32, seed=1), seed=1)


def test_tf_serving_and_v2_bodies_hold_the_items_asked_for(bodies: payloads.Bodies) -> None:
    digits = json.loads(bodies.tfserving("digits", 3))["instances"]
    assert np.asarray(digits).shape == (3, 28, 28, 1)
    assert np.min(digits) >= 0.0 and np.max(digits) <= 1.0
    assert len(json.loads(bodies.tfserving("votes", 2))["instances"][1]) == 16
    resnet = json.loads(bodies.tfserving("resnet50", 1))["instances"][0]
    assert set(resnet) == {"b64"}
    (tensor,) = json.loads(bodies.v2("digits", 2))["inputs"]
    assert tensor["name"] == "image" and tensor["shape"] == [2, 28, 28, 1]
    assert len(tensor["data"]) == 2 * 28 * 28 and tensor["datatype"] == "FP32"
    (texts,) = json.loads(bodies.v2("sentiment", 4))["inputs"]
    assert texts["datatype"] == "BYTES" and len(texts["data"]) == 4 == texts["shape"][0]


def test_bodies_vary_from_request_to_request(bodies: payloads.Bodies) -> None:
    for make in (
        lambda: bodies.tfserving("digits", 1),
        lambda: bodies.sentiment_task(1),
        lambda: bodies.party_task(1),
        lambda: bodies.v2("votes", 1),
    ):
        assert len({make() for _ in range(20)}) > 5


def test_party_records_name_bills_and_may_leave_out_a_not_voting() -> None:
    votes = ("y", "n", "?", "y", "n", "?", "y", "n", "?", "y", "n", "?", "y", "n", "?", "y")
    records = [payloads.party_record(votes, random.Random(seed)) for seed in range(20)]
    assert all(set(r.values()) <= {"y", "n", "?"} for r in records)
    assert all(r["handicapped-infants"] == "y" for r in records)
    lengths = {len(r) for r in records}
    assert min(lengths) >= 11 and max(lengths) <= 16 and len(lengths) > 1


def test_uploads_are_multipart_files_in_file_fields(bodies: payloads.Bodies) -> None:
    body, content_type = payloads.multipart(bodies.digit_uploads(3))
    head = f"content-type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts = list(message.iter_parts())
    assert len(parts) == 3
    for part in parts:
        assert part.get_param("name", header="content-disposition") == "file"
        image = Image.open(io.BytesIO(part.get_payload(decode=True)))
        assert image.format == "PNG" and 28 <= image.width <= 140
        assert np.asarray(image.convert("L")).mean() > 127  # dark ink on light paper


def test_without_data_sets_the_corpus_is_generated_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.data, "shared_data_dirs", lambda: [tmp_path])
    monkeypatch.setattr(payloads, "shared_data_dirs", lambda: [tmp_path])
    corpus = payloads.load_corpus(size=20, seed=3)
    assert corpus.sources["digits"].startswith("generated")
    assert corpus.sources["texts"].startswith("generated")
    assert corpus.sources["photos"].startswith("generated")
    assert corpus.digits.shape == (20, 28, 28) and corpus.digits.max() == 255
    assert len(set(corpus.texts)) > 15
    formats = {Image.open(io.BytesIO(p.data)).format for p in corpus.photos}
    assert formats == {"JPEG", "PNG", "WEBP"}


def test_a_photos_folder_given_by_name_must_hold_photos(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a photo")
    with pytest.raises(training.data.DataNotFoundError, match="--photos"):
        payloads.load_corpus(tmp_path, size=4)
    Image.new("RGB", (64, 48), "red").save(tmp_path / "red.jpg")
    corpus = payloads.load_corpus(tmp_path, size=4)
    assert [(p.name, p.content_type) for p in corpus.photos] == [("red.jpg", "image/jpeg")]


# -- real Locust runs against a real server -------------------------------------------------


@pytest.fixture(scope="module")
def load_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shipped models and a resnet50 stand-in, so every user class has a model."""
    repo = tmp_path_factory.mktemp("load-server")
    for name in ("digits", "sentiment", "votes"):
        shutil.copytree(MODELS_DIR / name, repo / name)
    export_standin(repo, standin_model(), "imagenet")
    with running_server(Settings(model_base_path=repo), timeout=180) as url:
        yield url


def locust(url: str, out: Path, *args: str, seconds: int = 60) -> subprocess.CompletedProcess[str]:
    """A headless run from the repository root ([tool.locust] applies); CSV under `out`."""
    command = [str(LOCUST), "--headless", "-H", url, "--csv", str(out), *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds + 120, check=False
    )


def stats_by_name(prefix: Path) -> dict[str, dict[str, str]]:
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def answered_ok(prefix: Path) -> float:
    """2xx answers the server counted between the run's two /metrics snapshots, except the
    first snapshot's own."""
    before, after = (
        Scrape.parse(Path(f"{prefix}_metrics_{moment}.prom").read_text())
        for moment in ("before", "after")
    )
    moves = moved(before, after, "modelserve_requests_total", "route", "code")
    return sum(n for (route, code), n in moves.items() if code[0] == "2" and route != "/metrics")


def test_smoke_load_passes_its_thresholds_and_reports(load_server: str, tmp_path: Path) -> None:
    """docs/load-tests.md: the CI smoke. Every route answers, the server counted exactly the
    requests Locust sent, and the report has its plots and figures."""
    prefix = tmp_path / "smoke"
    run = locust(
        load_server,
        prefix,
        *("--shape", "step", "--step-users", "2", "--step-seconds", "7", "--max-users", "6"),
        *("--spawn-rate", "6", "--max-items", "3", "--csv-full-history"),
        *("--html", f"{prefix}.html", "--max-fail-ratio", "0", "--max-p95-ms", "5000"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "thresholds passed" in run.stderr
    stats = stats_by_name(prefix)
    for route in ROUTES:
        assert int(stats[route]["Request Count"]) > 0, route
    aggregated = stats["Aggregated"]
    assert aggregated["Failure Count"] == "0"
    sent = int(aggregated["Request Count"])
    # Every request Locust counted was answered, and a few more: those in flight when Locust
    # stopped its users, answered by the server but never recorded. Runs end 4-6 over with 6
    # users and once ended 7 over (CI): two per user allows that and still fails a server that
    # loses requests or counts any twice (thousands off).
    assert sent <= answered_ok(prefix) <= sent + 2 * 6
    record = json.loads(Path(f"{prefix}_run.json").read_text())
    assert record["shape"] == "step" and record["verdict"] == {"passed": True, "reasons": []}
    assert len(record["user_classes"]) == 6
    assert "Locust" in Path(f"{prefix}.html").read_text()

    report = subprocess.run(
        [sys.executable, "-m", "loadtests.report", str(prefix), "--settle", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    summary = Path(f"{prefix}_summary.md").read_text()
    for plot in ("smoke_over_time.png", "smoke_vs_users.png"):
        assert plot in summary
        assert Image.open(tmp_path / plot).size[0] > 300
    assert "mean batch size" in summary.lower()
    assert f"{sent:,}" in summary


def test_a_run_over_its_thresholds_fails(load_server: str, tmp_path: Path) -> None:
    run = locust(
        load_server,
        tmp_path / "strict",
        *("-u", "2", "-t", "4s", "--tags", "votes", "--max-p95-ms", "0.001"),
        seconds=4,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert "is above --max-p95-ms" in run.stderr
    verdict = json.loads((tmp_path / "strict_run.json").read_text())["verdict"]
    assert verdict["passed"] is False


def test_tags_select_one_model_across_protocols(load_server: str, tmp_path: Path) -> None:
    run = locust(load_server, tmp_path / "votes", "-u", "3", "-t", "4s", "--tags", "votes")
    assert run.returncode == 0, run.stderr[-3000:]
    names = set(stats_by_name(tmp_path / "votes")) - {"Aggregated"}
    assert names == {"/v1/models/votes:predict", "/v2/models/votes/infer", "/api/v1/party"}
    assert "had no tasks left" not in run.stderr  # classes without votes tasks were dropped


def test_models_the_server_does_not_serve_are_left_out_or_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(MODELS_DIR / "votes", repo / "votes")
    with running_server(Settings(model_base_path=repo)) as url:
        run = locust(url, tmp_path / "mixed", "-u", "2", "-t", "3s", "PartyUser", "SentimentUser")
        assert run.returncode == 0, run.stderr[-3000:]
        assert "does not serve sentiment: those tasks are left out" in run.stderr
        assert set(stats_by_name(tmp_path / "mixed")) == {"/api/v1/party", "Aggregated"}

        refused = locust(url, tmp_path / "refused", "-u", "2", "-t", "3s", "--tags", "digits")
        assert refused.returncode != 0
        assert "does not serve digits (--tags)" in refused.stderr
