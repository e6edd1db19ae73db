"""Property-based fuzzing of every REST route from the OpenAPI document (schemathesis), against a
real server: TF Serving's /v1/models/..., the Open Inference Protocol's /v2/..., the task API's
/api/v1/... and the operational routes.

Per operation, schemathesis generates requests that fit the document (positive) and that break
it (negative); in three cases out of four the path parameters name a served model (and version,
label, method), so that the request bodies reach the decoders instead of stopping at a 404, in
the others they are generated too. Every answer must be
- no server error (5xx): bad input is always a 4xx;
- in time: a request that takes more than TIMEOUT seconds fails the test (no hang);
- as documented: a status the document declares has a body that fits its schema (every error
  is `{"error": "..."}`, every task API answer its model).

CI runs EXAMPLES cases per operation (fewer where the operation has fewer distinct requests),
derandomized: the same cases on every run. By hand, `MODELSERVE_FUZZ_EXAMPLES=500` runs more
and `MODELSERVE_FUZZ_SEED=<n>` other ones. The totals (cases per operation, statuses seen) are
printed and written to tests/artifacts/fuzz-openapi.json.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from service.server import ModelServer
from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.nasty_inputs import serve_repository
from tests.saved_models import DTYPES

EXAMPLES = int(os.environ.get("MODELSERVE_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("MODELSERVE_FUZZ_SEED")  # unset: derandomized (reproducible in CI)
TIMEOUT = 10.0  # seconds per request
REPORT = Path(__file__).parent / "artifacts" / "fuzz-openapi.json"

# The document the server serves (test_served_document_is_the_fuzzed_one checks it is); built
# here, without a server, so that each operation is a test of its own.
DOCUMENT: dict[str, Any] = ModelServer(Settings(model_base_path=MODELS_DIR)).app.openapi()
# a copy: schemathesis may change the examples of the dict it is given while it generates
SCHEMA = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}

# What the server serves (tests.nasty_inputs.build_repository): model -> methods; `plus` has
# the label `stable`.
SERVED = {
    "votes": ["predict"],
    "digits": ["predict"],
    "sentiment": ["predict"],
    "resnet50": ["predict"],
    "dtypes": ["predict"],
    "multi": ["predict"],
    "plus": ["predict"],
    "examples": ["classify", "regress"],
}
LABELLED = {"plus": "stable"}
# Their inputs (V2 datatypes), so that generated tensors can be named as the model's are.
INPUTS = {
    "votes": {"votes": "FP32"},
    "digits": {"image": "FP32"},
    "sentiment": {"text": "BYTES"},
    "resnet50": {"image_bytes": "BYTES"},
    "dtypes": {f"x_{name}": datatype for name, _, _, datatype in DTYPES},
    "multi": {"a": "FP32", "b": "INT32"},
    "plus": {"x": "FP32"},
    "examples": {"x": "FP32"},
}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

RESULTS: dict[str, Counter[int]] = {}


def served_paths(operation: Any) -> list[dict[str, str]]:
    """Path parameters that address something served, for every model (and method)."""
    names = {parameter.name for parameter in operation.path_parameters}
    if not names:
        return []
    paths = []
    for model, methods in SERVED.items():
        label = LABELLED.get(model)
        if label is None and names & {"label", "label_method"}:
            continue
        for method in methods:
            every = {
                "model": model,
                "version": "1",
                "label": label or "",
                "model_method": f"{model}:{method}",
                "version_method": f"1:{method}",
                "label_method": f"{label}:{method}",
            }
            if not names <= set(every):  # a parameter of another kind: generated only
                return []
            path = {name: every[name] for name in sorted(names)}
            if path not in paths:
                paths.append(path)
    return paths


def generated(operation: Any, **fixed: Any) -> st.SearchStrategy[Any]:
    """Cases that fit the document and cases that break it."""
    return st.one_of(*(operation.as_strategy(generation_mode=m, **fixed) for m in MODES))


def addressed(operation: Any, path: dict[str, str]) -> st.SearchStrategy[Any]:
    """Cases for a served model whose tensors are named as its inputs are (V2 `inputs`, TF
    Serving's columnar `inputs`), with its datatypes half the time: a random name stops at
    "unknown input", before the tensor is decoded."""
    model = path.get("model") or path["model_method"].partition(":")[0]
    inputs = INPUTS[model]

    def name_inputs(case: Any, datatypes: bool) -> Any:
        tensors = case.body.get("inputs") if isinstance(case.body, dict) else None
        if isinstance(tensors, list):  # V2
            for tensor, name in zip(tensors, cycle(inputs), strict=False):
                if isinstance(tensor, dict):
                    tensor["name"] = name
                    if datatypes:
                        tensor["datatype"] = inputs[name]
        elif isinstance(tensors, dict):  # TF Serving, columnar
            case.body["inputs"] = dict(zip(inputs, tensors.values(), strict=False))
        return case

    cases = generated(operation, path_parameters=path)
    return st.tuples(cases, st.booleans()).map(lambda pair: name_inputs(*pair))


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_repository(tmp_path_factory.mktemp("fuzz")) as url:
        yield url


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    total = sum(sum(statuses.values()) for statuses in RESULTS.values())
    summary = {
        "examples_per_operation": EXAMPLES,
        "operations": len(RESULTS),
        "cases": total,
        "seconds": round(time.monotonic() - started, 1),
        "by_operation": {
            label: {str(status): count for status, count in sorted(statuses.items())}
            for label, statuses in sorted(RESULTS.items())
        },
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    line = (
        f"OpenAPI fuzzing: {total} cases over {len(RESULTS)} operations (up to {EXAMPLES} "
        f"each) in {summary['seconds']} s; report: {REPORT}"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown even when pytest captures output
        print("\n" + line)


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_operation(label: str, hostile_server: str, report: None) -> None:
    operation = OPERATIONS[label]
    statuses = RESULTS.setdefault(label, Counter())

    def fuzz(strategy: st.SearchStrategy[Any], examples: int) -> None:
        @settings(
            max_examples=examples,
            derandomize=SEED is None,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate, Phase.shrink],
        )
        @given(case=strategy)
        def call(case: Any) -> None:
            started = time.monotonic()
            response = case.call(base_url=hostile_server, session=session, timeout=TIMEOUT)
            elapsed = time.monotonic() - started
            assert elapsed < TIMEOUT, f"{case.as_curl_command()} took {elapsed:.1f} s"
            statuses[response.status_code] += 1
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        (call if SEED is None else seed(int(SEED))(call))()

    paths = served_paths(operation)
    with requests.Session() as session:
        if paths:  # most cases address a served model, so that their bodies get decoded
            served = st.sampled_from(paths).flatmap(lambda path: addressed(operation, path))
            fuzz(served, EXAMPLES - EXAMPLES // 4)
            fuzz(generated(operation), EXAMPLES // 4)
        else:
            fuzz(generated(operation), EXAMPLES)
    assert statuses, f"no case ran for {label}"


def test_served_document_is_the_fuzzed_one(hostile_server: str) -> None:
    served = httpx.get(f"{hostile_server}/openapi.json", timeout=30).json()
    assert served == DOCUMENT


def test_every_route_documents_its_error_body() -> None:
    """Every route a client sends something to documents its errors, 4XX at least, and each
    as `{"error": "..."}`; none documents the 422 this server never sends."""
    error = {"$ref": "#/components/schemas/ErrorAnswer"}
    for label, operation in OPERATIONS.items():
        definition = operation.definition.raw
        if not definition.get("parameters") and "requestBody" not in definition:
            continue  # nothing a client sends can be wrong
        responses = definition["responses"]
        assert "422" not in responses, label  # validation errors are 400s
        assert "4XX" in responses, label
        for status in (s for s in responses if s[0] in "45"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == error, (label, status)
    assert DOCUMENT["components"]["schemas"]["ErrorAnswer"]["required"] == ["error"]
