"""Results out of a run: metrics.json and the resolved config, plugin artifacts, loggers, table."""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from saelab.evals.base import EvalPlugin, RunContext
from saelab.evals.evaluator import scalar_results
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
    metrics = {"metrics": scalar_results(results), "provenance": provenance}
    written.append(write_json(out_dir / "metrics.json", metrics))
    return written


def log_to(
    logger: Any, results: dict[str, Any], provenance: dict[str, Any], plugins: Any
) -> None:
    """Summary metrics, provenance and the plugins' media to W&B (others got `log_dict`)."""
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    run = logger.experiment
    run.config.update({"provenance": provenance}, allow_val_change=True)
    run.summary.update(scalar_results(results))
    media = {k: v for plugin in plugins.values() for k, v in plugin.media(results).items()}
    if media:
        run.log(media)


# A summary row: the run's folder, then these provenance keys, then every scalar metric. The
# runs dashboard (`saelab.server.runs`) reads the same keys.
SUMMARY_KEYS = (
    "model", "hook", "layer", "location", "sae_family", "sae_source", "sae_k", "n_tokens",
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
    rows = scalar_results(results)
    width = max(map(len, rows), default=10)
    print(f"\n{provenance['model']} | {provenance['hook']} | {provenance['sae_source']}")
    print(
        f"{provenance['n_tokens']} tokens"
        + (" (first position excluded)" if provenance["first_position_excluded"] else "")
        + f" in {provenance['seconds']:.1f} s"
    )
    print("-" * (width + 14))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:>12.6g}")
    print("-" * (width + 14))
    print(f"results: {written[-1].parent}")
