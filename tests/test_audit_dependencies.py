"""scripts/audit_dependencies.py: its verdict on pip-audit's JSON report (CI runs the script
itself: .ci/run)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "audit_dependencies.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# pip-audit's JSON format (`pip-audit --format json`): audited packages carry `vulns`,
# packages it could not look up a `skip_reason`
CLEAN = {"name": "orjson", "version": "3.10.0", "vulns": []}
VULNERABLE = {
    "name": "jinja2",
    "version": "3.1.2",
    "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": []}],
}
SKIPPED = {"name": "modelserve", "skip_reason": "Dependency not found on PyPI"}


def test_a_known_vulnerability_fails_the_audit_and_names_the_fix() -> None:
    lines, status = load_script().verdict(
        {"dependencies": [CLEAN, VULNERABLE, SKIPPED]}, require=False
    )
    assert status == 1
    assert lines[0] == "dependency audit: 3 installed, 2 audited, 1 with known vulnerabilities"
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)" in lines[1]


def test_clean_packages_pass() -> None:
    lines, status = load_script().verdict({"dependencies": [CLEAN, SKIPPED]}, require=True)
    assert (status, len(lines)) == (0, 1)


def test_nothing_audited_warns_and_fails_only_when_required() -> None:
    script = load_script()
    for report in ({"dependencies": [SKIPPED]}, None):  # None: pip-audit itself failed
        lines, status = script.verdict(report, require=False)
        assert status == 0 and "nothing was audited" in lines[-1]
        assert script.verdict(report, require=True)[1] == 2
