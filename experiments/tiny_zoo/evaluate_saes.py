"""Evaluate every bundled SAE of the tiny zoo on the bundled validation split.

Runs `saelab eval model=tiny data=bundled sae=tiny_<family> location=... layer=...` for each
SAE under saelab/zoo/tiny/saes and writes saelab/zoo/tiny/saes/metrics.json (read by the
tests) and a markdown table for the model card.

    python experiments/tiny_zoo/evaluate_saes.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from saelab.io import write_json
from saelab.zoo import ZOO_DIR

FAMILIES = {"topk": "tiny_topk", "relu_l1": "tiny_relu"}
KEYS = (
    "reconstruction/nmse",
    "reconstruction/explained_variance",
    "sparsity/l0",
    "downstream/ce_clean",
    "downstream/ce_sae",
    "downstream/ce_loss_recovered",
    "downstream/kl",
    "density/dead_fraction",
)


def evaluate(family: str, location: str, layer: int, workdir: Path) -> dict[str, float]:
    run_dir = workdir / f"{family}-{location}-{layer}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "saelab",
            "eval",
            "model=tiny",
            "data=bundled",
            f"sae={FAMILIES[family]}",
            f"location={location}",
            f"layer={layer}",
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics["metrics"][key] for key in KEYS} | {
        "n_tokens": metrics["provenance"]["n_tokens"]
    }


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((ZOO_DIR / "tiny" / "saes").glob("*/*/*.pt")):
            family, location, layer = path.parent.parent.name, path.parent.name, int(path.stem)
            metrics = evaluate(family, location, layer, Path(tmp))
            results.append({"family": family, "location": location, "layer": layer, **metrics})
            print(family, location, layer, {k: round(v, 4) for k, v in metrics.items()})
    write_json(ZOO_DIR / "tiny" / "saes" / "metrics.json", results)
    print(
        "\n| family | location | layer | nmse | expl. var. | L0 | CE clean | CE with SAE "
        "| CE loss recovered | KL | dead |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['family']} | {r['location']} | {r['layer']} "
            f"| {r['reconstruction/nmse']:.3f} | {r['reconstruction/explained_variance']:.3f} "
            f"| {r['sparsity/l0']:.1f} | {r['downstream/ce_clean']:.3f} "
            f"| {r['downstream/ce_sae']:.3f} | {r['downstream/ce_loss_recovered']:.3f} "
            f"| {r['downstream/kl']:.4f} | {r['density/dead_fraction']:.3f} |"
        )


if __name__ == "__main__":
    main()
