"""The model repository's on-disk layout, shared by the training jobs and the server.

`<base>/<name>/<version>/` in TF Serving's layout: `saved_model.pb`, `variables/`,
`assets/labels.txt` and `assets.extra/model_card.json`. Versions are int64 numbers written
plainly (`7`, not `07`); any other folder name (such as an export still being written) is
ignored, and a symbolic link unless following them is allowed.
This module imports no TensorFlow, so listing a repository is instant.
"""

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
    """A model folder's versions, ascending, and the folders that look like versions but are
    ignored, each with the reason (folder name -> reason)."""

    versions: list[int] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


def scan_versions(model_dir: Path, *, follow_symlinks: bool = False) -> VersionScan:
    """The version folders of one model. Names that are not a plain version number (`01`,
    `1.0`, `+1`, ` 1`), numbers beyond int64 and, unless `follow_symlinks`, symbolic links
    are ignored with a reason; hidden names and names without a digit (`tmp`) silently."""
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
    """None for a version folder; why not ('' when the name is plainly no version)."""
    name = path.name
    if name.startswith(".") or not any(c.isdigit() for c in name):  # hidden: exports in progress
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
    """Version folders of one model, ascending; anything else is ignored (see scan_versions)."""
    return scan_versions(model_dir, follow_symlinks=follow_symlinks).versions


def model_names(base_path: Path) -> list[str]:
    """Models in a repository: sub-folders holding at least one version folder (a symbolic
    link too: whether it is served is the server's decision, which reports it)."""
    if not base_path.is_dir():
        return []
    return sorted(
        p.name
        for p in base_path.iterdir()
        if p.is_dir() and existing_versions(p, follow_symlinks=True)
    )


def read_model_card(version_dir: Path) -> dict[str, Any]:
    """The model card of one exported version ({} when the version has none)."""
    path = version_dir / EXTRA_DIR / MODEL_CARD_FILE
    if not path.is_file():
        return {}
    card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return card
