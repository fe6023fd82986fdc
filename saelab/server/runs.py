"""What a served directory is: a saelab export, or a directory of OpenAI's viewer files.

Decided once at start-up, so bad input is one clear line before the server starts and the
browser asks `/api/runs` instead of guessing from file names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import UserError

ATOM_FILE = re.compile(r"^(\d+)\.json$")  # OpenAI's `<atom>.json` FeatureInfo files


@dataclass
class Run:
    """One served directory; `index` is its number in `/data/<index>/...` URLs."""

    index: int
    path: Path
    kind: str  # "export" or "openai"
    manifest: dict[str, Any] = field(default_factory=dict)
    atoms: list[int] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"index": self.index, "path": str(self.path), "kind": self.kind}
        if self.kind == "export":
            summary["manifest"] = self.manifest
        else:
            summary["atoms"] = self.atoms
        return summary


def open_run(index: int, directory: str | Path) -> Run:
    """Classify `directory` or raise a UserError that says what was expected."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise UserError(f"no such directory: {directory}")
    path = path.resolve()
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{manifest} is not valid JSON ({error})") from None
        if not str(data.get("schema", "")).startswith("saelab-export/"):
            raise UserError(f"{manifest} is not a saelab export manifest (no saelab-export schema)")
        return Run(index, path, "export", manifest=data)
    atoms = sorted(int(m.group(1)) for p in path.iterdir() if (m := ATOM_FILE.match(p.name)))
    if atoms:
        return Run(index, path, "openai", atoms=atoms)
    if (path / "latents").is_dir():
        raise UserError(
            f"{directory} has no manifest.json: the export is incomplete (the manifest is "
            "written last); run saelab export again"
        )
    raise UserError(
        f"{directory} is not a saelab export (no manifest.json) nor a directory of OpenAI "
        "viewer files (<atom>.json); pass the directory saelab export printed"
    )
