"""Pass/fail thresholds of a load test, so a run can gate a deploy.

`--max-fail-ratio 0.01 --max-p95-ms 250`: the run fails (exit code 1) when more than 1 % of
requests failed or the 95th percentile of all requests exceeds 250 ms; a run that made no
request at all fails too, since it proves nothing. Without thresholds Locust's own rule holds
(exit code 1 when any request failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Thresholds:
    max_fail_ratio: float | None = None
    max_p95_ms: float | None = None

    @property
    def any(self) -> bool:
        return self.max_fail_ratio is not None or self.max_p95_ms is not None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed, one line per threshold exceeded."""
    summary: str = ""
    """The measured values next to their thresholds."""


def judge(requests: int, fail_ratio: float, p95_ms: float, thresholds: Thresholds) -> Verdict:
    """The verdict on a run's totals."""
    reasons = []
    if requests == 0:
        reasons.append("no request was made")
    if thresholds.max_fail_ratio is not None and fail_ratio > thresholds.max_fail_ratio:
        reasons.append(
            f"failure ratio {fail_ratio:.2%} is above --max-fail-ratio "
            f"{thresholds.max_fail_ratio:.2%}"
        )
    if thresholds.max_p95_ms is not None and p95_ms > thresholds.max_p95_ms:
        reasons.append(f"p95 {p95_ms:,.0f} ms is above --max-p95-ms {thresholds.max_p95_ms:,.0f}")
    summary = f"{requests:,} requests, {fail_ratio:.2%} failed, p95 {p95_ms:,.0f} ms"
    return Verdict(passed=not reasons, reasons=reasons, summary=summary)
