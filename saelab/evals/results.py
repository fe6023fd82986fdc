"""Results out of a run: metrics.json and the resolved config, plugin artifacts, loggers, table.

`metrics.json` holds `metrics` (name -> value), `stderr` (name -> standard error, for the
metrics that have one: `saelab.evals.stderr`) and `provenance`. The per-context influences
behind the standard errors go to `contexts.safetensors` beside it, for paired comparisons;
summaries, W&B and the console name a metric's standard error `<metric>_se`.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from saelab.evals.base import EvalPlugin, RunContext
from saelab.evals.evaluator import scalar_results
from saelab.evals.stderr import Estimate
from saelab.io import atomic_write, write_json

VERSIONED = ("saelab", "torch", "transformer-lens", "transformers", "lightning", "torchmetrics")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def provenance(run: RunContext, n_tokens: int, **timing: Any) -> dict[str, Any]:
    """Where one SAE's results came from: model, place, SAE file, hash and family, tokens
    evaluated (over all ranks), versions."""
    return {
        "model": run.model.name,
        "precision": run.model.precision.name,
        "hook": run.hook,
        "layer": run.place.layer,
        "location": run.place.location,
        **run.checkpoint.provenance(),
        "data": run.data.source.name,
        "n_tokens": n_tokens,
        "tokens_sha256": run.data.fingerprint(),
        "first_position_excluded": run.data.exclude_first,
        **timing,
        "versions": versions(),
    }


def completed(run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a complete run (its `metrics.json`, written last), or None: a file that
    is missing, truncated or not a metrics record means the run must be done again."""
    try:
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("metrics"), dict)
    return record["metrics"] if ok else None


def save(
    out_dir: Path,
    cfg: DictConfig,
    results: dict[str, Any],
    provenance: dict[str, Any],
    plugins: Any,
) -> list[Path]:
    """Write plugin artifacts and the resolved config, then metrics.json last (it marks done)."""
    written: list[Path] = []
    for plugin in plugins.values():
        assert isinstance(plugin, EvalPlugin)
        written += plugin.save_artifacts(results, out_dir)
    config_text = OmegaConf.to_yaml(cfg, resolve=True)
    written.append(atomic_write(out_dir / "config.yaml", lambda f: f.write(config_text.encode())))
    definitions = {k: v for plugin in plugins.values() for k, v in plugin.definitions.items()}
    if definitions:
        provenance = {**provenance, "definitions": definitions}
    if (influences := context_influences(results)) is not None:
        blob = safetensors_bytes(influences)
        written.append(atomic_write(out_dir / CONTEXTS_FILE, lambda f: f.write(blob)))
    metrics = {
        "metrics": scalar_results(results),
        "stderr": standard_errors(results),
        "provenance": provenance,
    }
    written.append(write_json(out_dir / "metrics.json", metrics))
    return written


CONTEXTS_FILE = "contexts.safetensors"  # "context": indices [C]; per metric: influences [C]


def standard_errors(results: dict[str, Any]) -> dict[str, float]:
    return {k: v.se for k, v in results.items() if isinstance(v, Estimate)}


def with_standard_errors(results: dict[str, Any]) -> dict[str, float]:
    """Every scalar, and `<metric>_se` after each that has a standard error (loggers, rows)."""
    out: dict[str, float] = {}
    for key, value in scalar_results(results).items():
        out[key] = value
        if isinstance(results[key], Estimate):
            out[f"{key}_se"] = results[key].se
    return out


def context_influences(results: dict[str, Any]) -> dict[str, Tensor] | None:
    """The influences of the metrics over the same contexts as the first (all, in a run), as
    float64 CPU tensors keyed by metric, with their context indices under "context"."""
    found = [(k, v) for k, v in results.items() if isinstance(v, Estimate)]
    if not found:
        return None
    contexts = found[0][1].contexts.cpu()
    out = {"context": contexts.contiguous()}
    for key, value in found:
        if torch.equal(value.contexts.cpu(), contexts):
            out[key] = value.influence.double().cpu().contiguous()
    return out


def log_to(logger: Any, results: dict[str, Any], provenance: dict[str, Any], plugins: Any) -> None:
    """Summary metrics, provenance and the plugins' media to W&B (others got `log_dict`)."""
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    run = logger.experiment
    run.config.update({"provenance": provenance}, allow_val_change=True)
    run.summary.update(with_standard_errors(results))
    media = {k: v for plugin in plugins.values() for k, v in plugin.media(results).items()}
    if media:
        run.log(media)


# A summary row: the run's folder, then these provenance keys, then every scalar metric and
# `<metric>_se` after each that has a standard error. The runs dashboard (`saelab.server.runs`)
# reads the same keys.
SUMMARY_KEYS = (
    "model", "hook", "layer", "location", "sae_family", "sae_source", "sae_k", "n_tokens",
    "tokens_sha256",
)  # fmt: skip


def write_summary(root: Path) -> list[dict[str, Any]]:
    """`sweep.json` and `sweep.csv` under `root`: one row per complete run below it (a folder
    with metrics.json), its place, SAE and every scalar metric. Returns the rows."""
    rows = []
    for path in sorted(Path(root).rglob("metrics.json")):
        try:
            record = json.loads(path.read_text())
            provenance = dict(record["provenance"])
        except (OSError, ValueError, KeyError, TypeError):  # an unfinished run: not a row
            continue
        row = {"run": str(path.parent.relative_to(root))}
        row.update({k: provenance.get(k) for k in SUMMARY_KEYS})
        row.update(record["metrics"])
        stderr = record.get("stderr") if isinstance(record.get("stderr"), dict) else {}
        row.update({f"{k}_se": v for k, v in stderr.items()})
        rows.append(row)
    if rows:
        write_json(Path(root) / "sweep.json", rows)
        columns = list(dict.fromkeys(key for row in rows for key in row))

        def write_csv(f) -> None:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, columns)
            writer.writeheader()
            writer.writerows(rows)
            text.flush()
            text.detach()

        atomic_write(Path(root) / "sweep.csv", write_csv)
    return rows


class SweepSummary(Callback):
    """Writes the summary of a Hydra multirun (`saelab eval -m ...`) when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = write_summary(Path(config.hydra.sweep.dir))
        if rows:
            print(f"{len(rows)} runs: {Path(config.hydra.sweep.dir) / 'sweep.csv'}")


def print_table(results: dict[str, Any], provenance: dict[str, Any], written: list[Path]) -> None:
    """Each metric as `value ± standard error` (over contexts), where it has one."""
    rows = scalar_results(results)
    width = max(map(len, rows), default=10)
    print(f"\n{provenance['model']} | {provenance['hook']} | {provenance['sae_source']}")
    print(
        f"{provenance['n_tokens']} tokens"
        + (" (first position excluded)" if provenance["first_position_excluded"] else "")
        + f" in {provenance['seconds']:.1f} s; ± one standard error over contexts"
    )
    print("-" * (width + 28))
    for key, value in rows.items():
        se = results[key].se if isinstance(results[key], Estimate) else None
        print(f"{key:<{width}}  {value:>12.6g}" + (f" ± {se:.2g}" if se is not None else ""))
    print("-" * (width + 28))
    print(f"results: {written[-1].parent}")
