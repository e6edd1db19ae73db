"""The monitoring assets in deploy/: the Grafana dashboard, the Prometheus rules and their
promtool unit tests, and the README's PromQL, all held to the metrics the gateway exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.system_tools import require_program

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "modelserve-dashboard.json"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yaml"
README = DEPLOY / "README.md"

# The metrics contract of service/metrics.py: name -> its own labels.
CONTRACT: dict[str, set[str]] = {
    "modelserve_requests_total": {"model", "protocol", "route", "code"},
    "modelserve_request_duration_seconds": {"model", "protocol", "route"},
    "modelserve_queue_wait_seconds": {"model", "version"},
    "modelserve_batch_duration_seconds": {"model", "version"},
    "modelserve_batch_size": {"model", "version"},
    "modelserve_batches_total": {"model", "version", "reason"},
    "modelserve_batch_rows_total": {"model", "version"},
    "modelserve_batch_padding_rows_total": {"model", "version"},
    "modelserve_queue_depth": {"model", "version"},
    "modelserve_batches_in_flight": {"model", "version"},
    "modelserve_requests_rejected_total": {"model", "reason"},
    "modelserve_model_load_seconds": {"model", "version"},
    "modelserve_model_load_failures_total": {"model"},
    "modelserve_model_version_available": {"model", "version"},
    "modelserve_model_ready": {"model"},
    "modelserve_instance_info": {"model", "version", "model_instance", "device"},
    "modelserve_saturation": {"model"},
    "modelserve_gpu_memory_bytes": {"device", "kind"},
    "modelserve_build_info": {"version", "tensorflow", "python"},
}
HISTOGRAMS = {
    "modelserve_request_duration_seconds",
    "modelserve_queue_wait_seconds",
    "modelserve_batch_duration_seconds",
    "modelserve_batch_size",
}
TARGET_LABELS = {"job", "instance"}  # attached by Prometheus at scrape time
# Not ours but always there: prometheus_client's process collector, and Prometheus' own `up`.
OTHER_METRICS = re.compile(r"up|process_\w+")

ALERTS = {
    "ModelHighErrorRate",
    "ModelHighLatency",
    "ModelNotReady",
    "ModelRequestsShed",
    "ModelSaturated",
    "ModelLoadFailed",
    "ModelserveTargetDown",
}
SEVERITIES = {"critical", "warning", "info"}


# ------------------------------------------------------------------ PromQL, roughly parsed

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{?\w+(?::\w+)?\}?")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = r"(?<![\w:.])[A-Za-z_:][\w:]*"
_SELECTOR = re.compile(rf"({_IDENT})?\s*\{{([^}}]*)\}}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_CALL_OR_NAME = re.compile(rf"({_IDENT})\s*(\()?")


def _normalise(expr: str) -> str:
    """Grafana variables out (they only appear in strings and ranges here), strings emptied."""
    return _STRING.sub('""', _GRAFANA_VAR.sub("5m", expr))


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in matchers and grouping clauses) or parts of durations and numbers."""
    text = _normalise(expr)
    names = {m.group(1) for m in _SELECTOR.finditer(text) if m.group(1)}
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", _RANGE.sub(" ", text))
    for match in _CALL_OR_NAME.finditer(text):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it matches on) for every `name{...}` in an expression."""
    return [
        (m.group(1), set(_MATCHER.findall(m.group(2))))
        for m in _SELECTOR.finditer(_normalise(expr))
        if m.group(1)
    ]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    return {
        label.strip()
        for m in _GROUPING.finditer(_normalise(expr))
        for label in m.group(2).split(",")
        if label.strip()
    }


def labels_of(name: str) -> set[str] | None:
    """The labels a series of this name can carry, or None if the name is not in the contract.
    A histogram's _bucket/_sum/_count series count as the histogram (buckets add `le`)."""
    if name in CONTRACT:
        return CONTRACT[name] | TARGET_LABELS
    base, _, suffix = name.rpartition("_")
    if base in HISTOGRAMS and suffix in {"bucket", "sum", "count"}:
        return CONTRACT[base] | TARGET_LABELS | ({"le"} if suffix == "bucket" else set())
    return None


def contract_problems(expr: str, extra_names: dict[str, set[str]] | None = None) -> list[str]:
    """What in an expression is not in the contract: unknown metric names, matchers on labels
    the metric does not have, grouping by labels none of its metrics has."""
    extra_names = extra_names or {}
    problems: list[str] = []
    known: set[str] = set()
    open_labels = False  # a process_*/up series: labels not ours to check
    for name in sorted(metric_names(expr)):
        labels = extra_names.get(name, labels_of(name))
        if labels is not None:
            known |= labels
        elif OTHER_METRICS.fullmatch(name):
            open_labels = True
        else:
            problems.append(f"unknown metric {name!r}")
    for name, matched in selectors(expr):
        labels = extra_names.get(name, labels_of(name))
        if labels is not None and matched - labels:
            problems.append(f"{name} has no label(s) {sorted(matched - labels)}")
    if not open_labels and grouping_labels(expr) - known:
        problems.append(
            f"grouping by label(s) no metric has: {sorted(grouping_labels(expr) - known)}"
        )
    return problems


def test_promql_parsing_finds_metrics_not_functions_labels_or_durations() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, model) "
        '(rate(modelserve_request_duration_seconds_bucket{model=~"$model", route!="/x{y}"}'
        "[$__rate_interval])))\n/ on (model) group_left max without (instance) "
        "(modelserve_saturation offset 15m) > bool 1e-3 or up"
    )
    assert metric_names(expr) == {
        "modelserve_request_duration_seconds_bucket",
        "modelserve_saturation",
        "up",
    }
    assert selectors(expr) == [("modelserve_request_duration_seconds_bucket", {"model", "route"})]
    assert grouping_labels(expr) == {"le", "model", "instance"}
    assert contract_problems(expr) == []
    assert contract_problems(
        'sum by (status) (rate(modelserve_request_total{code="500"}[5m]))'
    ) == [
        "unknown metric 'modelserve_request_total'",
        "grouping by label(s) no metric has: ['status']",
    ]
    assert contract_problems("modelserve_batch_size_sum{reason='full'}") == [
        "modelserve_batch_size_sum has no label(s) ['reason']"
    ]


# ------------------------------------------------------------------ the dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def panels_by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in all_panels(dashboard)}


def row_of(dashboard: dict[str, Any]) -> dict[str, str]:
    """Panel title -> title of the row it sits under."""
    rows: dict[str, str] = {}
    current = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            for inner in panel.get("panels", []):
                rows[inner["title"]] = current
        else:
            rows[panel["title"]] = current
    return rows


# title -> (row, panel type, unit or None when the panel type has no single unit)
EXPECTED_PANELS: dict[str, tuple[str, str, str | None]] = {
    "Request rate per model and protocol": ("Traffic", "timeseries", "reqps"),
    "Errors (non-2xx) per model": ("Traffic", "timeseries", "reqps"),
    "Error ratio (non-2xx) per model": ("Traffic", "timeseries", "percentunit"),
    "Latency p50 and p99 per model": ("Traffic", "timeseries", "s"),
    "Batch size distribution": ("Batching", "heatmap", None),
    "Mean batch size": ("Batching", "timeseries", "none"),
    "Padding waste": ("Batching", "timeseries", "percentunit"),
    "Dispatch reasons": ("Batching", "timeseries", "short"),
    "Batch execution time p50 and p99": ("Batching", "timeseries", "s"),
    "Queue wait p50 and p99": ("Queue & saturation", "timeseries", "s"),
    "Queue depth and batches in flight": ("Queue & saturation", "timeseries", "short"),
    "Rejections by reason": ("Queue & saturation", "timeseries", "reqps"),
    "Saturation per model": ("Queue & saturation", "timeseries", "none"),
    "Model ready": ("Models", "stat", "none"),
    "Model load time": ("Models", "bargauge", "s"),
    "Process CPU": ("Process", "timeseries", "short"),
    "Resident memory": ("Process", "timeseries", "bytes"),
    "GPU memory": ("Process", "timeseries", "bytes"),
}


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if "expr" in t]


def test_dashboard_is_a_grafana_dashboard_with_datasource_and_model_variables(
    dashboard: dict[str, Any],
) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    model = variables["model"]
    assert model["type"] == "query"
    assert model["datasource"]["uid"] == "${datasource}"
    assert model["definition"] == "label_values(modelserve_requests_total, model)"
    assert model["query"]["query"] == model["definition"]
    assert model["multi"] is True and model["includeAll"] is True


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), f"{panel['title']}: no description"
        targets = panel["targets"]
        assert targets, f"{panel['title']}: no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        for t in targets:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()


def test_dashboard_has_the_panels_in_their_rows(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Traffic", "Batching", "Queue & saturation", "Models", "Process"]
    by_title = panels_by_title(dashboard)
    row = row_of(dashboard)
    missing = sorted(set(EXPECTED_PANELS) - set(by_title))
    assert not missing, f"panels missing from the dashboard: {missing}"
    for title, (row_title, kind, unit) in EXPECTED_PANELS.items():
        panel = by_title[title]
        assert (row[title], panel["type"]) == (row_title, kind), title
        if unit is not None:
            assert panel["fieldConfig"]["defaults"]["unit"] == unit, title


def test_dashboard_queries_compute_what_the_titles_say(dashboard: dict[str, Any]) -> None:
    by_title = panels_by_title(dashboard)
    latency = [re.sub(r"\s+", "", e) for e in exprs(by_title["Latency p50 and p99 per model"])]
    for level in ("0.5", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({level},sumby(le,model)")
            and "rate(modelserve_request_duration_seconds_bucket{" in e
            and "[5m]" in e
            for e in latency
        ), f"no p{level} latency query"

    (heat,) = by_title["Batch size distribution"]["targets"]
    assert heat["format"] == "heatmap" and "increase(modelserve_batch_size_bucket" in heat["expr"]
    assert by_title["Batch size distribution"]["options"]["calculate"] is False

    (mean,) = exprs(by_title["Mean batch size"])
    assert metric_names(mean) == {"modelserve_batch_size_sum", "modelserve_batch_size_count"}
    (waste,) = exprs(by_title["Padding waste"])
    assert metric_names(waste) == {
        "modelserve_batch_padding_rows_total",
        "modelserve_batch_rows_total",
    }
    assert "reason" in grouping_labels(exprs(by_title["Dispatch reasons"])[0])
    assert "reason" in grouping_labels(exprs(by_title["Rejections by reason"])[0])
    for title in ("Queue wait p50 and p99", "Batch execution time p50 and p99"):
        assert any("histogram_quantile(0.99" in e for e in exprs(by_title[title])), title
    assert {
        n for e in exprs(by_title["Queue depth and batches in flight"]) for n in metric_names(e)
    } == {
        "modelserve_queue_depth",
        "modelserve_batches_in_flight",
    }

    errors = exprs(by_title["Errors (non-2xx) per model"])[0]
    assert 'code!~"2..|OK"' in errors  # HTTP and gRPC (status names) alike

    saturation = by_title["Saturation per model"]["fieldConfig"]["defaults"]
    assert 1 in [step["value"] for step in saturation["thresholds"]["steps"]]
    assert saturation["custom"]["thresholdsStyle"]["mode"] != "off", "no threshold line at 1"

    assert "modelserve_model_ready" in exprs(by_title["Model ready"])[0]
    assert "process_cpu_seconds_total" in exprs(by_title["Process CPU"])[0]
    assert "process_resident_memory_bytes" in exprs(by_title["Resident memory"])[0]
    assert "modelserve_gpu_memory_bytes" in exprs(by_title["GPU memory"])[0]


def test_dashboard_uses_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    problems = [
        f"{panel['title']}: {problem}\n    {expr}"
        for panel in all_panels(dashboard)
        for expr in exprs(panel)
        for problem in contract_problems(expr)
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, f"variable {variable['name']}: unexpected query {variable['definition']}"
        metric, label = match.groups()
        if label not in (labels_of(metric) or set()):
            problems.append(f"variable {variable['name']}: {metric} has no label {label}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ the rules


@pytest.fixture(scope="module")
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def rules(groups: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if kind in rule]


def test_every_alert_has_severity_summary_and_description(
    rule_groups: list[dict[str, Any]],
) -> None:
    alerts = rules(rule_groups, "alert")
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert annotations.get("description", "").strip(), f"{name}: no description"
        text = annotations["summary"] + annotations["description"]
        assert "$value" in text, f"{name}: the annotations do not show the value"
        if name != "ModelserveTargetDown":
            assert "$labels.model" in text, f"{name}: the annotations do not name the model"
    latency = next(a for a in alerts if a["alert"] == "ModelHighLatency")
    assert "to change it" in latency["annotations"]["description"]


def test_rules_use_only_contract_metrics(rule_groups: list[dict[str, Any]]) -> None:
    recorded = {r["record"]: {"model"} for r in rules(rule_groups, "record")}
    for name in recorded:
        assert re.fullmatch(r"model:modelserve_\w+:\w+", name), f"{name}: not level:metric:ops"
    assert {
        "model:modelserve_request_duration_seconds:p99_5m",
        "model:modelserve_batch_size:mean_5m",
        "model:modelserve_requests_rejected:rate5m",
    } <= set(recorded)
    problems = [
        f"{rule.get('alert') or rule.get('record')}: {problem}"
        for rule in rules(rule_groups, "expr")
        for problem in contract_problems(rule["expr"], recorded)
    ]
    assert not problems, "\n".join(problems)


def test_readme_promql_uses_only_contract_metrics() -> None:
    blocks = re.findall(r"```promql\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    problems = [problem for block in blocks for problem in contract_problems(block)]
    assert not problems, "\n".join(problems)


def promtool() -> str:
    """promtool's path; a failure (not a skip) without it: CI must not pass unchecked rules."""
    return require_program(
        "promtool", package="prometheus", needed_for="checking deploy/prometheus/alerts.yaml"
    )


def run_promtool(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_rules() -> None:
    output = run_promtool("check", "rules", str(RULES.relative_to(REPO_ROOT)))
    assert "SUCCESS" in output


def test_promtool_rule_unit_tests_pass() -> None:
    output = run_promtool("test", "rules", str(RULES_TEST.relative_to(REPO_ROOT)))
    assert "SUCCESS" in output


def test_rule_unit_tests_cover_firing_and_silence() -> None:
    """The unit tests must see every alert fire, and ModelNotReady and ModelHighErrorRate also
    stay silent (a test case with no expected alerts)."""
    spec = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert spec["rule_files"] == ["alerts.yaml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for group in spec["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert fires == ALERTS, f"alerts never seen firing: {sorted(ALERTS - fires)}"
    assert {"ModelNotReady", "ModelHighErrorRate"} <= silent
