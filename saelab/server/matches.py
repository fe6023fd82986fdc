"""Cross-SAE links for latent pages: match records between SAEs whose exports are served.

A record is `saelab match --out`'s JSON (or a sweep's `matches/` file, the same schema): both
SAEs' sha256 and, per latent of A, its best latent of B and their decoder cosine. It links the
exports of those very SAEs (the manifests' `sae.sha256`): a latent of A to its best match in B,
a latent of B to the latents of A whose best match it is. Records come from `saelab view
--matches FILE` (each must fit two served exports, else one line and exit 2) and from the
`matches.json` of a served sweep folder (`sweep.match=true`; read only inside the folder, and
a record whose SAEs have no served exports, or that does not parse, links nothing).

Read once at start-up; `/api/matches` answers one latent's links, never a whole record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saelab.errors import UserError
from saelab.server.files import json_inside
from saelab.server.runs import Run

REVERSE_SHOWN = 10  # a latent of B lists at most this many of the A latents matched to it


@dataclass
class Link:
    """One record between the served exports `a` and `b`: `best[i]`, `cosine[i]` (and, from a
    sweep, the activation `correlation[i]`) for A's latent i, and for each latent of B the A
    latents matched to it, best first."""

    a: int
    b: int
    best: list[int]
    cosine: list[float]
    correlation: list[float | None] = field(default_factory=list)
    reverse: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, j in enumerate(self.best):
            self.reverse.setdefault(j, []).append(i)
        for matched in self.reverse.values():
            matched.sort(key=lambda i: -self.cosine[i])


def check(record: Any, name: str) -> dict[str, Any]:
    """`record` if it is a complete match record, else a UserError naming what is wrong."""
    if not isinstance(record, dict):
        raise UserError(f"{name} is not a match record (a JSON object from saelab match --out)")
    for side in ("a", "b"):
        about = record.get(side)
        if (
            not isinstance(about, dict)
            or not isinstance(about.get("sha256"), str)
            or not (isinstance(about.get("n_latents"), int) and about["n_latents"] > 0)
        ):
            raise UserError(f"{name}: '{side}' must give the SAE's sha256 and n_latents")
    best, cosine, n_a, n_b = (record.get("best"), record.get("cosine"),
                              record["a"]["n_latents"], record["b"]["n_latents"])  # fmt: skip
    if (
        not isinstance(best, list)
        or not isinstance(cosine, list)
        or not (len(best) == len(cosine) == n_a)
    ):
        raise UserError(f"{name}: 'best' and 'cosine' must list one value per latent of A ({n_a})")
    if not all(isinstance(j, int) and 0 <= j < n_b for j in best):
        raise UserError(f"{name}: 'best' must hold latents of B (0 to {n_b - 1})")
    if not all(isinstance(c, (int, float)) for c in cosine):
        raise UserError(f"{name}: 'cosine' must hold numbers")
    correlation = record.get("correlation", [])
    if not isinstance(correlation, list) or (correlation and len(correlation) != n_a):
        raise UserError(f"{name}: 'correlation' must list one value per latent of A ({n_a})")
    if not all(c is None or isinstance(c, (int, float)) for c in correlation):
        raise UserError(f"{name}: 'correlation' must hold numbers or null")
    return record


def read(path: Path) -> dict[str, Any]:
    """A `--matches FILE`: its record, or a UserError (missing, not JSON, not a record)."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"--matches {path}: cannot read it ({error.strerror})") from None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UserError(f"--matches {path} is not valid JSON ({error})") from None
    return check(record, f"--matches {path}")


def exports_by_sha(runs: list[Run]) -> dict[str, Run]:
    return {
        str(r.manifest.get("sae", {}).get("sha256")): r
        for r in runs
        if r.kind == "export" and isinstance(r.manifest.get("sae"), dict)
    }


def link(record: dict[str, Any], exports: dict[str, Run], name: str, strict: bool) -> Link | None:
    """The record as a Link between the served exports of its two SAEs. Without both: None,
    or (`strict`, a file the user named) a UserError; a record whose widths differ from those
    exports' (not the same SAEs after all) is always an error."""
    found = [exports.get(record[side]["sha256"]) for side in ("a", "b")]
    if None in found:
        if not strict:
            return None
        side = "A" if found[0] is None else "B"
        raise UserError(
            f"{name}: no served export of its SAE {side} (sha256 "
            f"{record['a' if side == 'A' else 'b']['sha256'][:12]}...): pass the exports of both "
            "SAEs to saelab view"
        )
    a, b = found
    for side, run in zip("ab", (a, b), strict=True):
        n = run.manifest.get("n_latents", run.manifest["sae"].get("n_latents"))
        if n != record[side]["n_latents"]:
            raise UserError(
                f"{name}: SAE {side.upper()} has {record[side]['n_latents']} latents but its "
                f"export {run.path} has {n}"
            )
    cosine = [float(c) for c in record["cosine"]]
    return Link(a.index, b.index, record["best"], cosine, record.get("correlation", []))


def links(runs: list[Run], files: list[Path]) -> list[Link]:
    """Every link: the `--matches` files (strict) and the served sweep folders' matches (a
    pair's file read only where both its SAEs have served exports); each export's `matched`
    lists the exports it links to."""
    exports = exports_by_sha(runs)
    found = [link(read(f), exports, f"--matches {f}", strict=True) for f in files]
    for run in runs:
        if run.kind != "results":
            continue
        sha = {row["run"]: row.get("sae_sha256") for row in run.rows}
        for entry in run.matches:
            if sha.get(entry["a"]) not in exports or sha.get(entry["b"]) not in exports:
                continue
            record = json_inside(run.path, entry["file"])
            try:
                found.append(link(check(record, entry["file"]), exports, entry["file"], False))
            except UserError:  # a sweep's file that is not a record: its summary row stays
                continue
    out = [one for one in found if one is not None]
    for one in out:
        for here, there in ((one.a, one.b), (one.b, one.a)):
            if there not in runs[here].matched:
                runs[here].matched.append(there)
    return out


def latent_links(all_links: list[Link], export: int, latent: int) -> list[dict[str, Any]]:
    """`/api/matches?export=<n>&latent=<id>`: that latent's best match in each other export
    matched from it, and the latents of other exports whose best match it is."""
    out = []

    def entry(one: Link, other: int, i: int, j: int, direction: str) -> dict[str, Any]:
        """A's latent `i` and B's `j`, its best match: the one in export `other`."""
        found = {"export": other, "latent": j if other == one.b else i,
                 "cosine": one.cosine[i], "direction": direction}  # fmt: skip
        return found | ({"correlation": one.correlation[i]} if one.correlation else {})

    for one in all_links:
        if one.a == export and 0 <= latent < len(one.best):
            out.append(entry(one, one.b, latent, one.best[latent], "best"))
        if one.b == export:
            for i in one.reverse.get(latent, [])[:REVERSE_SHOWN]:
                out.append(entry(one, one.a, i, latent, "matched to this"))
    return out
