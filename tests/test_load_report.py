"""loadtests/report.py (and the modules it uses: locust_csv, levels, summary_md, plots) and
loadtests/server_metrics.py on hand-written Locust and /metrics files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from loadtests import report, server_metrics
from loadtests.levels import Level, find_knee, find_levels
from loadtests.locust_csv import HistoryRow, input_path, read_history
from loadtests.summary_md import fmt, fmt_share, knee_line

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000

# Header lines as locust 2.47 writes them (--csv PREFIX --csv-full-history).
HISTORY_HEADER = next(
    csv.reader(
        [
            "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,"
            "99%,99.9%,99.99%,100%,Total Request Count,Total Failure Count,"
            "Total Median Response Time,Total Average Response Time,Total Min Response Time,"
            "Total Max Response Time,Total Average Content Size"
        ]
    )
)
STATS_HEADER = next(
    csv.reader(
        [
            "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
            "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
            "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
        ]
    )
)
FAILURES_HEADER = ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def history_row(
    second: int,
    users: int,
    rps: float,
    p99: float | None,
    name: str = "Aggregated",
    failures_per_s: float = 1.0,
) -> list[object]:
    """A row with p50 = p99 / 2 and p95 = p99 * 0.75; "N/A" percentiles when p99 is None."""
    p50, p95 = (p99 / 2, p99 * 0.75) if p99 is not None else (None, None)
    cells = [p50, p50, p50, p50, p95, p95, p95, p99, p99, p99, p99]
    percentiles = ["N/A" if value is None else value for value in cells]
    method = "" if name == "Aggregated" else "POST"
    totals = [100 * second, second, 4, 4.2, 1.0, 50.0, 41.0]
    return [T0 + second, users, method, name, rps, failures_per_s, *percentiles, *totals]


def level_rows(first_second: int, users: int, rps: float, p99: float) -> list[list[object]]:
    """20 s at one user count: 10 s of rows mixing in the previous level (the settle time, with
    values that would spoil the medians), then 10 settled rows; and a per-name row each second,
    which the report must ignore."""
    rows = []
    for offset in range(20):
        second = first_second + offset
        settled = offset >= 10
        rows.append(history_row(second, users, rps if settled else 999.0, p99 if settled else 999))
        rows.append(history_row(second, users, 5000.0, 5000.0, name="/v1/models/votes:predict"))
    return rows


def step_ramp_history() -> list[list[object]]:
    """2, 4 and 8 users: 100, 192 and 200 req/s, p99 20, 30 and 80 ms; the knee is at 4."""
    rows = [history_row(0, 0, 0.0, None, failures_per_s=0.0)]
    rows += level_rows(1, 2, 100.0, 20.0)
    rows += level_rows(21, 4, 192.0, 30.0)
    rows[-2] = history_row(40, 4, 192.0, None)  # a settled window without requests
    rows += level_rows(41, 8, 200.0, 80.0)
    return rows


METRICS_BEFORE = """\
# HELP modelserve_requests_total Requests answered.
# TYPE modelserve_requests_total counter
modelserve_requests_total{code="200",model="votes",protocol="rest",route="/v1"} 10.0
modelserve_requests_total{code="429",model="votes",protocol="v2",route="/v2"} 1.0
modelserve_requests_total{code="200",model="sentiment",protocol="rest",route="/v1"} 3.0
# HELP modelserve_requests_rejected_total Requests refused.
# TYPE modelserve_requests_rejected_total counter
modelserve_requests_rejected_total{model="votes",reason="queue_full"} 1.0
modelserve_requests_rejected_total{model="votes",reason="deadline"} 0.0
modelserve_requests_rejected_total{model="sentiment",reason="queue_full"} 0.0
# HELP modelserve_batches_total Batches run, by dispatch reason.
# TYPE modelserve_batches_total counter
modelserve_batches_total{model="votes",reason="idle",version="1"} 4.0
# HELP modelserve_batch_padding_rows_total Rows added to reach an allowed batch size.
# TYPE modelserve_batch_padding_rows_total counter
modelserve_batch_padding_rows_total{model="votes",version="1"} 2.0
# HELP modelserve_batch_size Real rows per batch.
# TYPE modelserve_batch_size histogram
modelserve_batch_size_bucket{model="votes",version="1",le="1.0"} 1.0
modelserve_batch_size_bucket{model="votes",version="1",le="8.0"} 4.0
modelserve_batch_size_bucket{model="votes",version="1",le="+Inf"} 4.0
modelserve_batch_size_count{model="votes",version="1"} 4.0
modelserve_batch_size_sum{model="votes",version="1"} 10.0
# HELP modelserve_queue_depth Requests waiting in the batch queue.
# TYPE modelserve_queue_depth gauge
modelserve_queue_depth{model="votes",version="1"} 7.0
# HELP process_start_time_seconds Start time of the process.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
"""

# votes: 50 answered 200, 3 more 429, 2 new 504; version 2 appeared; sentiment did nothing;
# digits appeared. Version 1 ran 10 batches of 30 rows, version 2 5 batches of 20 rows.
METRICS_AFTER = """\
# HELP modelserve_requests_total Requests answered.
# TYPE modelserve_requests_total counter
modelserve_requests_total{code="200",model="votes",protocol="rest",route="/v1"} 60.0
modelserve_requests_total{code="429",model="votes",protocol="v2",route="/v2"} 4.0
modelserve_requests_total{code="504",model="votes",protocol="v2",route="/v2"} 2.0
modelserve_requests_total{code="200",model="sentiment",protocol="rest",route="/v1"} 3.0
modelserve_requests_total{code="200",model="digits",protocol="v2",route="/v2"} 7.0
modelserve_requests_total{code="404",model="",protocol="rest",route="/v1"} 9.0
# HELP modelserve_requests_rejected_total Requests refused.
# TYPE modelserve_requests_rejected_total counter
modelserve_requests_rejected_total{model="votes",reason="queue_full"} 4.0
modelserve_requests_rejected_total{model="votes",reason="deadline"} 2.0
modelserve_requests_rejected_total{model="votes",reason="client_gone"} 1.0
modelserve_requests_rejected_total{model="sentiment",reason="queue_full"} 0.0
# HELP modelserve_batches_total Batches run, by dispatch reason.
# TYPE modelserve_batches_total counter
modelserve_batches_total{model="votes",reason="idle",version="1"} 8.0
modelserve_batches_total{model="votes",reason="full",version="1"} 6.0
modelserve_batches_total{model="votes",reason="full",version="2"} 5.0
# HELP modelserve_batch_padding_rows_total Rows added to reach an allowed batch size.
# TYPE modelserve_batch_padding_rows_total counter
modelserve_batch_padding_rows_total{model="votes",version="1"} 7.0
modelserve_batch_padding_rows_total{model="votes",version="2"} 5.0
# HELP modelserve_batch_size Real rows per batch.
# TYPE modelserve_batch_size histogram
modelserve_batch_size_bucket{model="votes",version="1",le="1.0"} 2.0
modelserve_batch_size_bucket{model="votes",version="1",le="8.0"} 14.0
modelserve_batch_size_bucket{model="votes",version="1",le="+Inf"} 14.0
modelserve_batch_size_count{model="votes",version="1"} 14.0
modelserve_batch_size_sum{model="votes",version="1"} 40.0
modelserve_batch_size_bucket{model="votes",version="2",le="8.0"} 5.0
modelserve_batch_size_bucket{model="votes",version="2",le="+Inf"} 5.0
modelserve_batch_size_count{model="votes",version="2"} 5.0
modelserve_batch_size_sum{model="votes",version="2"} 20.0
# HELP modelserve_queue_depth Requests waiting in the batch queue.
# TYPE modelserve_queue_depth gauge
modelserve_queue_depth{model="votes",version="1"} 0.0
# HELP process_start_time_seconds Start time of the process.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
"""


def stats_row(
    method: str, name: str, requests: int, failures: int, rps: float, max_ms: float, p: str
) -> list[object]:
    """A row of PREFIX_stats.csv; `p` holds its p50, p95 and p99."""
    p50, p95, p99 = p.split(",")
    percentiles = [p50, p50, p50, p50, p95, p95, p95, p99, p99, p99, max_ms]
    return [method, name, requests, failures, p50, 4.2, 0.5, max_ms, 41.0, rps, 0.0, *percentiles]


def write_run(prefix: Path, history: list[list[object]]) -> None:
    """Every input of a run: history, totals, failures, /metrics snapshots and run.json."""
    write_csv(input_path(prefix, "_stats_history.csv"), HISTORY_HEADER, history)
    stats = [
        stats_row("POST", "/v1/models/votes:predict", 10469, 0, 290.49, 49.7, "4,8,9"),
        stats_row("POST", "/v1/models/nope:predict", 1029, 1029, 28.55, 7.5, "1,3,4"),
        stats_row("", "Aggregated", 11498, 1029, 319.04, 49.7, "4,8,9"),
    ]
    write_csv(input_path(prefix, "_stats.csv"), STATS_HEADER, stats)
    # 12 kinds with 1..12 occurrences, written least frequent first
    failures = [
        ["POST", f"/v1/models/m{count}:predict", f"HTTPError({count})", count, "", ""]
        for count in range(1, 13)
    ]
    write_csv(input_path(prefix, "_failures.csv"), FAILURES_HEADER, failures)
    input_path(prefix, "_metrics_before.prom").write_text(METRICS_BEFORE)
    input_path(prefix, "_metrics_after.prom").write_text(METRICS_AFTER)
    run_info = {
        "host": "http://127.0.0.1:18601",
        "shape": "StepRamp",
        "shape_parameters": {"step_users": 2, "step_seconds": 20},
        "user_classes": ["VotesUser"],
        "started": "2026-01-01T00:00:00Z",
        "thresholds": {"p99_ms": 50},
        "verdict": {"passed": False, "reasons": ["p99 80 ms > 50 ms"]},
    }
    input_path(prefix, "_run.json").write_text(json.dumps(run_info))


@pytest.fixture
def history_csv(tmp_path: Path) -> Path:
    path = tmp_path / "run_stats_history.csv"
    write_csv(path, HISTORY_HEADER, step_ramp_history())
    return path


def make_level(users: int, rps: float, p99: float | None = 10.0) -> Level:
    return Level(
        users=users,
        start=0.0,
        measured_from=10.0,
        end=20.0,
        samples=10,
        rps=rps,
        failures_per_s=0.0,
        p50=None,
        p95=None,
        p99=p99,
    )


# --- history, levels, knee -----------------------------------------------------------------


def test_history_keeps_only_aggregated_rows_and_reads_na_as_none(history_csv: Path) -> None:
    rows = read_history(history_csv)

    assert len(rows) == 61  # 1 + 3 levels x 20 s; the per-name rows are left out
    assert rows[0] == HistoryRow(T0, 0, 0.0, 0.0, None, None, None)
    assert rows[-1].users == 8
    assert rows[-1].p99 == 80.0


def test_levels_drop_the_settle_time_and_ignore_na(history_csv: Path) -> None:
    levels = find_levels(read_history(history_csv), settle=10.0)

    summary = [(lv.users, lv.seconds, lv.samples, lv.rps, lv.p50, lv.p99) for lv in levels]
    assert summary == [
        (2, 20.0, 10, 100.0, 10.0, 20.0),
        (4, 20.0, 10, 192.0, 15.0, 30.0),  # 9 settled rows with latencies, one N/A
        (8, 19.0, 10, 200.0, 40.0, 80.0),  # the last level ends at the last row
    ]
    assert levels[0].measured_from == T0 + 11


def test_a_longer_settle_keeps_fewer_rows_and_drops_levels_it_outlasts(history_csv: Path) -> None:
    rows = read_history(history_csv)

    assert [level.samples for level in find_levels(rows, settle=15.0)] == [5, 5, 5]
    assert find_levels(rows, settle=20.0) == []


def test_levels_at_zero_users_are_left_out() -> None:
    rows = [HistoryRow(T0 + s, 0 if s >= 30 else 2, 50.0, 0.0, 1, 2, 3) for s in range(60)]

    assert [level.users for level in find_levels(rows, settle=10.0)] == [2]


def test_a_user_count_that_comes_back_is_a_new_level() -> None:
    users = [2] * 15 + [4] * 15 + [2] * 15
    rows = [HistoryRow(T0 + s, n, 1.0, 0.0, 1, 2, 3) for s, n in enumerate(users)]

    assert [level.users for level in find_levels(rows, settle=10.0)] == [2, 4, 2]


def test_knee_is_the_fewest_users_reaching_95_percent_of_the_peak() -> None:
    levels = [make_level(2, 100.0), make_level(4, 192.0, p99=30.0), make_level(8, 200.0)]

    knee = find_knee(levels)

    assert knee is not None
    assert (knee.users, knee.rps, knee.p99) == (4, 192.0, 30.0)
    line = knee_line(levels, knee)
    assert line.startswith("Knee: 4 users, 192 req/s, p99 30 ms")
    assert "peak 200 req/s at 8 users" in line


def test_knee_when_throughput_falls_past_the_peak() -> None:
    levels = [make_level(2, 100.0), make_level(4, 200.0), make_level(8, 150.0)]

    assert find_knee(levels) == levels[1]


def test_knee_at_the_most_users_says_throughput_was_still_growing() -> None:
    levels = [make_level(2, 100.0), make_level(4, 150.0), make_level(8, 200.0)]

    knee = find_knee(levels)

    assert knee == levels[2]
    assert "had not levelled off" in knee_line(levels, knee)


@pytest.mark.parametrize(
    ("count", "reason"), [(0, "no user level outlasted"), (1, "a single user level")]
)
def test_no_knee_without_two_levels(count: int, reason: str) -> None:
    levels = [make_level(8, 200.0)][:count]

    assert find_knee(levels) is None
    assert reason in knee_line(levels, None)


def test_numbers_are_formatted_with_separators() -> None:
    assert fmt(11498) == "11,498"
    assert fmt(1234.567) == "1,234.6"
    assert fmt(3.3333, 2) == "3.33"
    assert fmt(None) == "—"
    assert fmt_share(0.0895) == "8.9%"


# --- server metrics ------------------------------------------------------------------------


def votes_and_others() -> tuple[server_metrics.ServerDelta, dict[str, server_metrics.ModelDelta]]:
    delta = server_metrics.compare(
        server_metrics.parse_exposition(METRICS_BEFORE),
        server_metrics.parse_exposition(METRICS_AFTER),
    )
    return delta, {model.model: model for model in delta.models}


def test_server_deltas_per_model() -> None:
    delta, models = votes_and_others()
    votes = models["votes"]

    assert not delta.restarted
    assert list(models) == ["digits", "votes", server_metrics.NO_MODEL]  # sentiment was idle
    assert votes.requests_by_class == {"2xx": 50.0, "4xx": 3.0, "5xx": 2.0}
    assert votes.batches == 15.0  # 10 of version 1, 5 of the new version 2
    assert votes.mean_batch_size == pytest.approx(50 / 15)
    assert votes.padding_rows == 10.0
    assert votes.padding_fraction == pytest.approx(10 / 60)
    assert votes.batches_by_reason == {"idle": 4.0, "full": 11.0}
    assert votes.rejected_by_reason == {"queue_full": 3.0, "deadline": 2.0, "client_gone": 1.0}
    assert models["digits"].requests_by_class == {"2xx": 7.0}
    assert models["digits"].mean_batch_size is None
    assert models[server_metrics.NO_MODEL].requests_by_class == {"4xx": 9.0}


def test_a_counter_that_went_down_is_reported_as_a_restart() -> None:
    after = METRICS_AFTER.replace('route="/v1"} 60.0', 'route="/v1"} 5.0')

    delta = server_metrics.compare(
        server_metrics.parse_exposition(METRICS_BEFORE), server_metrics.parse_exposition(after)
    )

    votes = next(model for model in delta.models if model.model == "votes")
    assert delta.restarted
    assert delta.reset_series == [
        'modelserve_requests_total{code="200",model="votes",protocol="rest",route="/v1"}'
    ]
    assert votes.requests_by_class["2xx"] == 5.0  # counted since the restart, not 5 - 10


def test_a_new_process_start_time_is_a_restart_even_when_counters_grew() -> None:
    after = METRICS_AFTER.replace("seconds 1.7e+09", "seconds 1.8e+09")

    delta = server_metrics.compare(
        server_metrics.parse_exposition(METRICS_BEFORE), server_metrics.parse_exposition(after)
    )

    votes = next(model for model in delta.models if model.model == "votes")
    assert delta.restarted
    assert delta.reset_series == []
    assert votes.requests_by_class["2xx"] == 60.0  # everything after counts: it is all new
    assert votes.batches == 19.0


def test_missing_snapshots_give_none(tmp_path: Path) -> None:
    (tmp_path / "before.prom").write_text(METRICS_BEFORE)

    assert server_metrics.compare_files(tmp_path / "before.prom", tmp_path / "after.prom") is None


# --- the whole report ----------------------------------------------------------------------


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 600 and image.height >= 400


def test_report_writes_plots_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "run"
    write_run(prefix, step_ramp_history())

    assert report.main([str(prefix), "--title", "Votes ramp"]) == 0

    assert_png(tmp_path / "run_over_time.png")
    assert_png(tmp_path / "run_vs_users.png")
    summary = (tmp_path / "run_summary.md").read_text()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(tmp_path / "run_summary.md")
    assert out[1].startswith("Knee: 4 users, 192 req/s, p99 30 ms")
    assert summary.startswith("# Votes ramp\n")
    assert "| Host | http://127.0.0.1:18601 |" in summary
    assert "| Shape parameters | step_users=2, step_seconds=20 |" in summary
    assert "**FAILED**\n- p99 80 ms > 50 ms" in summary
    assert "| p99_ms | 50 |" in summary
    assert "| POST | /v1/models/nope:predict | 1,029 | 1,029 | 100.0% | 28.6 |" in summary
    assert "|  | Aggregated | 11,498 | 1,029 | 8.9% | 319.0 | 4 | 8 | 9 | 49.7 |" in summary
    assert "| 2 | 20 | 10 | 100 | 1 | 10 | 15 | 20 |" in summary
    assert "| 8 | 19 | 10 | 200 | 1 | 40 | 60 | 80 |" in summary
    assert f"**{out[1]}**" in summary
    assert "| 12 | POST | /v1/models/m12:predict | HTTPError(12) |" in summary
    assert "/v1/models/m2:predict" not in summary  # beyond the top 10
    assert "2 more kinds" in summary
    assert (
        "| votes | 50 | 3 | 2 | 15 | 3.33 | 16.7% | full 11, idle 4 "
        "| client_gone 1, deadline 2, queue_full 3 |"
    ) in summary
    assert "sentiment" not in summary
    assert "![Throughput and latency over time](run_over_time.png)" in summary
    assert "![Throughput and latency per user level](run_vs_users.png)" in summary


def test_report_with_only_the_history_of_a_soak(tmp_path: Path) -> None:
    prefix = tmp_path / "soak"
    rows = [history_row(s, 8, 150.0, 40.0) for s in range(30)]
    write_csv(input_path(prefix, "_stats_history.csv"), HISTORY_HEADER, rows)
    out = tmp_path / "out"

    assert report.main([str(prefix), "--out", str(out), "--settle", "5"]) == 0

    summary = (out / "soak_summary.md").read_text()
    assert_png(out / "soak_vs_users.png")
    assert "| 8 | 29 | 25 | 150 |" in summary
    assert "No knee: the run has a single user level" in summary
    assert "Missing soak_stats.csv." in summary
    assert "Missing soak_metrics_before.prom or soak_metrics_after.prom" in summary
    assert "## Verdict" not in summary


def test_history_without_aggregated_rows_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "run"
    rows = [history_row(s, 2, 10.0, 5.0, name="/v1/models/votes:predict") for s in range(5)]
    write_csv(input_path(prefix, "_stats_history.csv"), HISTORY_HEADER, rows)

    assert report.main([str(prefix)]) == 2
    assert "no Aggregated rows in" in capsys.readouterr().err
    assert not (tmp_path / "run_summary.md").exists()


@pytest.mark.parametrize("command", [["-m", "loadtests.report"], ["loadtests/report.py"]])
def test_missing_history_exits_2_naming_the_file(tmp_path: Path, command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command, str(tmp_path / "nothing")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert f"missing {tmp_path / 'nothing_stats_history.csv'}" in result.stderr
