"""The repository layout shared by training and the server, TF Serving's: `<base>/<name>/<version>/`
with `assets/labels.txt` and `assets.extra/model_card.json`. No TensorFlow import here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABELS_FILE = "labels.txt"
EXTRA_DIR = "assets.extra"
MODEL_CARD_FILE = "model_card.json"
MAX_VERSION = 2**63 - 1
"""Versions are int64, as in TF Serving's protos: a larger number cannot be answered."""

_PLAIN_VERSION = re.compile(r"0|[1-9][0-9]*")  # ASCII digits, no sign, no leading zero


@dataclass(frozen=True)
class VersionScan:
    """A model folder's versions, ascending, and why each folder like a version is ignored."""

    versions: list[int] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


def scan_versions(model_dir: Path, *, follow_symlinks: bool = False) -> VersionScan:
    """Hidden names and names without a digit (exports in progress, `tmp`) are ignored silently;
    other folders that are not a plain version (`01`, `+1`, beyond int64, a symlink) with a
    reason."""
    if not model_dir.is_dir():
        return VersionScan()
    versions: list[int] = []
    ignored: dict[str, str] = {}
    for path in model_dir.iterdir():
        reason = _not_a_version(path, follow_symlinks)
        if reason is None:
            versions.append(int(path.name))
        elif reason:
            ignored[path.name] = reason
    return VersionScan(sorted(versions), ignored)


def _not_a_version(path: Path, follow_symlinks: bool) -> str | None:
    """None for a version folder, else why not ('' for names plainly no version)."""
    name = path.name
    if name.startswith(".") or not any(c.isdigit() for c in name):
        return ""
    if not _PLAIN_VERSION.fullmatch(name):
        return "not a plain version number (digits 0-9 only, no sign, no leading zero)"
    if int(name) > MAX_VERSION:
        return f"version number beyond {MAX_VERSION} (int64)"
    if path.is_symlink() and not follow_symlinks:
        return "a symbolic link (not followed unless MODELSERVE_FOLLOW_VERSION_SYMLINKS is set)"
    if not path.is_dir():
        return "not a folder"
    return None


def existing_versions(model_dir: Path, *, follow_symlinks: bool = False) -> list[int]:
    """See scan_versions."""
    return scan_versions(model_dir, follow_symlinks=follow_symlinks).versions


def model_names(base_path: Path) -> list[str]:
    """Sub-folders holding a version folder (a symlink too: the server decides and reports)."""
    if not base_path.is_dir():
        return []
    return sorted(
        p.name
        for p in base_path.iterdir()
        if p.is_dir() and existing_versions(p, follow_symlinks=True)
    )


def read_model_card(version_dir: Path) -> dict[str, Any]:
    """{} when the version has none."""
    path = version_dir / EXTRA_DIR / MODEL_CARD_FILE
    if not path.is_file():
        return {}
    card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return card
