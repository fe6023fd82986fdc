"""Paired differences of two runs' metrics, read from their files (`saelab compare`, the runs
dashboard's difference panel).

Two runs pair only if they were evaluated on the same tokens (`tokens_sha256` in their
provenance: the same contexts, the same counted positions); each metric's difference then has
the paired standard error of `saelab.evals.stderr`, from the per-context influences each run
saved in `contexts.safetensors`. Significant at 95%: |difference| > 1.96 paired SEs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from saelab.errors import UserError
from saelab.evals.results import CONTEXTS_FILE
from saelab.evals.stderr import Z_95, Estimate, paired


@dataclass
class RunResults:
    """One run's metrics with their standard errors and per-context influences."""

    path: Path
    estimates: dict[str, Estimate]
    provenance: dict[str, Any]


def load(run: str | Path) -> RunResults:
    """The run in folder `run` (or its `metrics.json`): a UserError names what is missing."""
    path = Path(run)
    folder = path.parent if path.name == "metrics.json" else path
    try:
        record = json.loads((folder / "metrics.json").read_text())
        metrics, provenance = record["metrics"], record["provenance"]
        stderr = record.get("stderr") or {}
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{run} is not a complete run: no readable metrics.json (give a run folder, e.g. "
            "a sweep row's <sweep>/<family>/<location>/<layer>)"
        ) from None
    try:
        influences = load_file(folder / CONTEXTS_FILE)
    except (OSError, SafetensorError):
        raise UserError(
            f"{folder} has no readable {CONTEXTS_FILE} (per-context values): evaluate it "
            "again with this saelab"
        ) from None
    contexts = influences.get("context", torch.zeros(0, dtype=torch.long))
    estimates = {
        key: Estimate(metrics[key], stderr.get(key, float("nan")), influence, contexts)
        for key, influence in influences.items()
        if key != "context" and key in metrics and len(influence) == len(contexts)
    }
    return RunResults(folder, estimates, provenance)


def differences(a: RunResults, b: RunResults) -> list[dict[str, Any]]:
    """Per metric both runs have: each value ± SE, a - b ± paired SE, z, significance."""
    token_a, token_b = a.provenance.get("tokens_sha256"), b.provenance.get("tokens_sha256")
    if token_a is None or token_a != token_b:
        raise UserError(
            f"{a.path} and {b.path} were not evaluated on the same tokens (tokens_sha256 "
            f"{str(token_a)[:12]} vs {str(token_b)[:12]}): a paired difference needs the same "
            "data, n_tokens, n_ctx and seed"
        )
    rows = []
    for key in (k for k in a.estimates if k in b.estimates):
        x, y = a.estimates[key], b.estimates[key]
        difference, se = paired(x, y)
        z = difference / se if se > 0 else (0.0 if difference == 0 else float("inf"))
        rows.append({
            "metric": key, "a": float(x), "a_se": x.se, "b": float(y), "b_se": y.se,
            "difference": difference, "se": se, "z": z, "significant": abs(z) > Z_95,
        })  # fmt: skip
    return rows


def table(a: RunResults, b: RunResults, rows: list[dict[str, Any]]) -> str:
    """The terminal table of `saelab compare`."""
    width = max((len(r["metric"]) for r in rows), default=10)
    lines = [
        f"A: {a.path}",
        f"B: {b.path}",
        f"same {a.provenance.get('n_tokens')} tokens (sha256 "
        f"{a.provenance['tokens_sha256'][:12]}); ± one standard error over contexts; "
        "A - B ± its paired standard error; * significant at 95% (|z| > 1.96)",
        f"{'metric':<{width}}  {'A':>22}  {'B':>22}  {'A - B':>24}  {'z':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['metric']:<{width}}  {r['a']:>12.6g} ± {r['a_se']:<7.2g}"
            f"  {r['b']:>12.6g} ± {r['b_se']:<7.2g}  {r['difference']:>+13.4g} ± {r['se']:<8.2g}"
            f"  {r['z']:>7.2f}{' *' if r['significant'] else ''}"
        )
    return "\n".join(lines)
