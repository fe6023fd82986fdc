"""The one path check of the viewer: a path given relative to a served root is read only if the
file it names, symlinks followed, lies inside that root. The server (`app.py`) and the runs
dashboard's reader (`runs.py`) both go through `inside`, and the server opens the path it
returns, so what is checked is what is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_PART = 255  # the longest file name Linux, macOS and Windows allow


def inside(root: Path, relative: Any) -> Path | None:
    """`root/relative` resolved (symlinks followed) if it stays inside the resolved `root`, else
    None: for anything but a relative path string, a NUL or backslash, a part longer than any
    file name, a symlink loop or a path that leaves `root`."""
    if not isinstance(relative, str) or "\x00" in relative or "\\" in relative:
        return None
    if relative.startswith("/") or any(len(part) > MAX_PART for part in relative.split("/")):
        return None
    try:
        root = root.resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    return target if target.is_relative_to(root) else None


def json_inside(root: Path, *parts: str) -> Any:
    """The JSON at `root/part/...` (empty parts skipped) if that file lies inside `root`; None
    if it does not, is missing or does not parse (unlike `formats.base.read_json`, which
    raises)."""
    path = inside(root, "/".join(p for p in parts if p))
    try:
        if path is None or not path.is_file():
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
