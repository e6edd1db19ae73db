"""The model repository's on-disk layout, shared by the training jobs and the server.

`<base>/<name>/<version>/` in TF Serving's layout: `saved_model.pb`, `variables/`,
`assets/labels.txt` and `assets.extra/model_card.json`. Versions are positive integers;
any other folder name (such as an export still being written) is ignored.
This module imports no TensorFlow, so listing a repository is instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS_FILE = "labels.txt"
EXTRA_DIR = "assets.extra"
MODEL_CARD_FILE = "model_card.json"


def existing_versions(model_dir: Path) -> list[int]:
    """Integer version folders of one model, ascending; anything else is ignored."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def model_names(base_path: Path) -> list[str]:
    """Models in a repository: sub-folders holding at least one integer version."""
    if not base_path.is_dir():
        return []
    return sorted(p.name for p in base_path.iterdir() if p.is_dir() and existing_versions(p))


def read_model_card(version_dir: Path) -> dict[str, Any]:
    """The model card of one exported version ({} when the version has none)."""
    path = version_dir / EXTRA_DIR / MODEL_CARD_FILE
    if not path.is_file():
        return {}
    card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return card
