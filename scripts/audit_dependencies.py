"""Audits the installed Python packages for known vulnerabilities with pip-audit.

    python scripts/audit_dependencies.py [--require] [--ignore-vuln ID ...]

Exit status: 0 when nothing vulnerable was found; 1 when a package has a known vulnerability
(each is listed with the versions that fix it); 2 when nothing could be audited (no
vulnerability service reachable: pip-audit asks PyPI's JSON API, which offline mirrors don't
serve) and `--require` was given. Without `--require` that case is a loud warning, so a CI
machine without internet still runs the rest of its checks; a release build should pass
`--require` (or set MODELSERVE_AUDIT_REQUIRED=1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any


def run_pip_audit(ignored: list[str]) -> dict[str, Any] | None:
    """pip-audit's JSON report of this interpreter's environment, or None when it failed."""
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"]
    command += ["--skip-editable"]  # modelserve itself is not on PyPI
    for vuln_id in ignored:
        command += ["--ignore-vuln", vuln_id]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        print(f"pip-audit failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return None
    return report


def verdict(report: dict[str, Any] | None, *, require: bool) -> tuple[list[str], int]:
    """The lines to print and the exit status for pip-audit's JSON `report`."""
    dependencies = report["dependencies"] if report else []
    audited = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    lines = [
        f"dependency audit: {len(dependencies)} installed, {len(audited)} audited, "
        f"{len(vulnerable)} with known vulnerabilities"
    ]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix released"
            lines.append(
                f"  {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})"
            )
    if vulnerable:
        return lines, 1
    if not audited:
        lines.append(
            "WARNING: nothing was audited: no vulnerability service was reachable "
            "(pip-audit needs PyPI's JSON API or OSV). Run it where one is."
        )
        return lines, 2 if require else 0
    return lines, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require", action="store_true", help="fail when nothing was audited")
    parser.add_argument("--ignore-vuln", action="append", default=[], metavar="ID")
    args = parser.parse_args()
    require = args.require or os.environ.get("MODELSERVE_AUDIT_REQUIRED") == "1"
    lines, status = verdict(run_pip_audit(args.ignore_vuln), require=require)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
