"""Messages clients see name no file of the server's: an absolute path is cut to its last part
(`.../damaged.h5`), unless the caller names a better stand-in (`digits/3` for a version's
folder). URLs are left whole, but for `file://` ones, which are paths too. No TensorFlow."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Not inside a word, a relative path or a URL (after ':' or '/').
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])(?:/[\w.@+~-]+){2,}/?")
_FILE_URL = re.compile(r"file://(?:/[\w.@+~-]+)+/?")


def without_paths(message: str, stand_ins: Mapping[str, str] | None = None) -> str:
    """`message` with each key of `stand_ins` replaced by its value, then any other absolute
    path (or file URL) cut to `.../<last part>`."""
    for path, shown in (stand_ins or {}).items():
        message = message.replace(path, shown)
    message = _FILE_URL.sub(lambda m: "file://.../" + _last_part(m.group()), message)
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + _last_part(m.group()), message)


def _last_part(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
