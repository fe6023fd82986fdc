"""What a served directory is: a saelab export, a directory of OpenAI's viewer files, or
evaluation results (a sweep or multirun folder with `sweep.json`, or a single eval run folder
with `metrics.json`) for the runs dashboard.

Decided once at start-up, so bad input is one clear line before the server starts and the
browser asks `/api/runs` instead of guessing from file names.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import UserError
from saelab.evals import compare
from saelab.evals.results import CONTEXTS_FILE, SUMMARY_KEYS
from saelab.server.files import inside, json_inside

ATOM_FILE = re.compile(r"^(\d+)\.json$")  # OpenAI's `<atom>.json` FeatureInfo files


@dataclass
class Run:
    """One served directory; `index` is its number in `/data/<index>/...` URLs."""

    index: int
    path: Path
    kind: str  # "export", "openai" or "results"
    manifest: dict[str, Any] = field(default_factory=dict)
    atoms: list[int] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # results: one row per SAE
    parent: int | None = None  # an export found inside a results folder: that folder's index
    matches: list[dict[str, Any]] = field(default_factory=list)  # results: pairs' summaries
    matched: list[int] = field(default_factory=list)  # export: exports it has match links to

    def describe(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"index": self.index, "path": str(self.path), "kind": self.kind}
        if self.parent is not None:
            summary["parent"] = self.parent
        if self.kind == "export":
            summary["manifest"] = self.manifest
            summary["matched"] = self.matched
        elif self.kind == "results":
            summary["rows"] = self.rows
            summary["matches"] = self.matches
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
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(
            "saelab-export/"
        ):
            raise UserError(f"{manifest} is not a saelab export manifest (no saelab-export schema)")
        return Run(index, path, "export", manifest=data)
    if (path / "sweep.json").is_file() or (path / "metrics.json").is_file():
        return Run(index, path, "results", rows=result_rows(path), matches=match_summaries(path))
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
        "viewer files (<atom>.json) nor evaluation results (sweep.json or metrics.json); "
        "pass the directory saelab export, eval or sweep printed"
    )


# -- evaluation results: rows for the runs dashboard -------------------------------------------
def family(row: dict[str, Any]) -> str:
    """The SAE family its run recorded (`sae_family`: OpenAI's family, the zoo family, the
    sweep entry's name), else the name of the file or URL it was loaded from."""
    if row.get("sae_family"):
        return str(row["sae_family"])
    pieces = [p for p in re.split(r"[/\\]", str(row.get("sae_source") or "")) if p]
    return pieces[-1] if pieces else "sae"


def row_from_metrics(run: str, data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        return None
    provenance = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    row: dict[str, Any] = {"run": run, **{k: provenance.get(k) for k in SUMMARY_KEYS}}
    row.update({k: v for k, v in data["metrics"].items() if isinstance(v, (int, float))})
    stderr = data.get("stderr") if isinstance(data.get("stderr"), dict) else {}
    row.update({f"{k}_se": v for k, v in stderr.items() if isinstance(v, (int, float))})
    row["sae_sha256"] = provenance.get("sae_sha256")
    return row


def result_rows(root: Path) -> list[dict[str, Any]]:
    """One row per SAE from `sweep.json` (a sweep or multirun), else from the `metrics.json`
    of a single run or of the run folders below (an unfinished multirun). Reads nothing
    outside `root`: a row whose folder leaves it is dropped."""
    rows: list[dict[str, Any]] = []
    summary = json_inside(root, "sweep.json")
    if isinstance(summary, list):
        for entry in summary:
            if not isinstance(entry, dict) or (folder := inside(root, entry.get("run"))) is None:
                continue
            run = folder.relative_to(root).as_posix()
            row = {k: v for k, v in entry.items() if isinstance(v, (str, int, float, type(None)))}
            row["run"] = "" if run == "." else run
            metrics = json_inside(root, run, "metrics.json") or {}
            provenance = metrics.get("provenance") if isinstance(metrics, dict) else None
            row["sae_sha256"] = (provenance or {}).get("sae_sha256")
            rows.append(row)
    else:
        candidates = [root / "metrics.json", *sorted(root.glob("*/metrics.json"))]
        candidates += sorted(root.glob("*/*/*/metrics.json"))
        for path in candidates:
            run = path.parent.relative_to(root).as_posix()
            run = "" if run == "." else run
            row = row_from_metrics(run, json_inside(root, run, "metrics.json"))
            if row is not None:
                rows.append(row)
    for row in rows:
        row["family"] = family(row)
        row["has_export"] = json_inside(root, row["run"], "export", "manifest.json") is not None
    return rows


def match_summaries(root: Path) -> list[dict[str, Any]]:
    """A sweep folder's `matches.json` (`sweep.match=true`: one summary per matched pair of
    SAEs), each entry kept only where its pair file lies inside the folder; [] without one."""
    data = json_inside(root, "matches.json")
    if not isinstance(data, list):
        return []
    out = []
    for entry in data:
        if not isinstance(entry, dict) or inside(root, entry.get("file")) is None:
            continue
        if isinstance(entry.get("a"), str) and isinstance(entry.get("b"), str):
            out.append({k: v for k, v in entry.items() if isinstance(v, (str, int, float))})
    return out


def nested_exports(runs: list[Run]) -> list[Run]:
    """Exports inside served results folders (`<run>/export/manifest.json`), served too so the
    dashboard can link to their feature pages; each row gets `export`: the export's index."""
    found: list[Run] = []
    by_sha = {r.manifest.get("sae", {}).get("sha256"): r.index for r in runs if r.kind == "export"}
    for run in runs:
        if run.kind != "results":
            continue
        for row in run.rows:
            if row.pop("has_export", False):
                try:
                    nested = open_run(len(runs) + len(found), run.path / row["run"] / "export")
                except UserError:
                    continue
                if nested.kind == "export" and nested.path.is_relative_to(run.path):
                    nested.parent = run.index
                    found.append(nested)
                    row["export"] = nested.index
            elif row.get("sae_sha256") and row["sae_sha256"] in by_sha:
                row["export"] = by_sha[row["sae_sha256"]]
    return found


def paired_differences(runs: list[Run], a: str, b: str) -> dict[str, Any]:
    """`/api/compare?a=<n>/<run>&b=<n>/<run>`: the paired differences of two rows (served
    folder n, the row's `run`), read only where both of its files lie inside that folder.
    A UserError says why two rows cannot be compared."""
    loaded = []
    for ref in (a, b):
        index, _, run = ref.partition("/")
        if not index.isdigit() or int(index) >= len(runs) or runs[int(index)].kind != "results":
            raise UserError(f"no served results folder {index}")
        root = runs[int(index)].path
        files = [inside(root, "/".join(p for p in (run, name) if p)) for name in
                 ("metrics.json", CONTEXTS_FILE)]  # fmt: skip
        if any(f is None for f in files):
            raise UserError(f"{ref} is not a run inside its served folder")
        loaded.append(compare.load(files[0].parent))
    rows = [{k: finite_or_none(v) for k, v in row.items()} for row in compare.differences(*loaded)]
    return {"a": a, "b": b, "n_tokens": loaded[0].provenance.get("n_tokens"), "rows": rows}


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: None in their place."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
