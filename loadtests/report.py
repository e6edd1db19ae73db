"""Command line: plots and a markdown summary of a headless Locust run (`--csv PREFIX
--csv-full-history`), written as PREFIX_over_time.png, PREFIX_vs_users.png, PREFIX_summary.md."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# `python loadtests/report.py` puts loadtests/, not the repository root, on sys.path.
if importlib.util.find_spec("loadtests") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.levels import find_knee, find_levels
from loadtests.locust_csv import ReportInputError, input_path, read_history
from loadtests.plots import plot_over_time, plot_vs_users
from loadtests.summary_md import build_summary, knee_line

# Locust's history percentiles and req/s cover the last 10 s: that much of each level still
# mixes in the previous one.
DEFAULT_SETTLE_SECONDS = 10.0


@dataclass(frozen=True)
class OutputPaths:
    over_time: Path
    vs_users: Path
    summary: Path


def output_paths(prefix: Path, out: Path | None) -> OutputPaths:
    directory = prefix.parent if out is None else out
    return OutputPaths(
        over_time=directory / f"{prefix.name}_over_time.png",
        vs_users=directory / f"{prefix.name}_vs_users.png",
        summary=directory / f"{prefix.name}_summary.md",
    )


def write_report(prefix: Path, out: Path | None, settle: float, title: str | None) -> str:
    """Writes the plots and the summary; returns the knee line."""
    history = read_history(input_path(prefix, "_stats_history.csv"))
    paths = output_paths(prefix, out)
    paths.summary.parent.mkdir(parents=True, exist_ok=True)
    title = title or f"Load test report: {prefix.name}"
    levels = find_levels(history, settle)
    knee = find_knee(levels)
    plot_over_time(history, levels, paths.over_time, title)
    plot_vs_users(levels, knee, paths.vs_users, title)
    summary = build_summary(
        prefix,
        title,
        settle,
        history,
        levels,
        summary=paths.summary,
        over_time=paths.over_time,
        vs_users=paths.vs_users,
    )
    paths.summary.write_text(summary, encoding="utf-8")
    return knee_line(levels, knee)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.report",
        description="Plots and a markdown summary of a headless Locust run (--csv PREFIX "
        "--csv-full-history).",
    )
    parser.add_argument("prefix", type=Path, help="the PREFIX given to locust --csv")
    parser.add_argument("--out", type=Path, help="output directory (default: PREFIX's)")
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_SECONDS,
        help="seconds dropped at the start of each user level (default: %(default)s)",
    )
    parser.add_argument("--title", help="title of the plots and the summary")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        knee = write_report(args.prefix, args.out, args.settle, args.title)
    except ReportInputError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    print(output_paths(args.prefix, args.out).summary)
    print(knee)
    return 0


if __name__ == "__main__":
    sys.exit(main())
