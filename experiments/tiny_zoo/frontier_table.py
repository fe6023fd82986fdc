"""The frontier's model-card table and its comparison at matched L0, from a sweep folder.

Reads `sweep.json` of `saelab sweep experiment=tiny_frontier`, writes
saelab/zoo/tiny/saes/frontier.json (read by tests/test_zoo.py) and prints two markdown tables:
every SAE's metrics, and each recipe's nmse and CE loss recovered at L0 8, 12, 16, 24 and 32,
interpolated linearly in log L0 between that recipe's two nearest SAEs (never extrapolated:
a recipe whose SAEs do not bracket an L0 has no value there).

    python experiments/tiny_zoo/frontier_table.py logs/sweep/runs/<run>
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

from saelab.io import write_json
from saelab.zoo import ZOO_DIR

KEYS = (
    "sparsity/l0",
    "reconstruction/nmse",
    "reconstruction/explained_variance",
    "downstream/ce_clean",
    "downstream/ce_sae",
    "downstream/ce_loss_recovered",
    "downstream/kl",
    "density/dead_fraction",
)
MATCHED = (8, 12, 16, 24, 32)  # 12 and 24: inside every family's L0s


def at_l0(points: list[tuple[float, float]], l0: float) -> float | None:
    """`points` ((L0, value) pairs) interpolated linearly in log L0 at `l0`; None outside
    their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= l0 <= x1:
            if x1 == x0:
                return y0
            t = (math.log(l0) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return None


def main(sweep: Path) -> None:
    rows = json.loads((sweep / "sweep.json").read_text())
    card = []
    for row in rows:
        variant = row["run"].split("/")[0].rsplit("_l0_", 1)[1]
        card.append({"family": row["sae_family"], "variant": f"l0_{variant}",
                     "location": row["location"], "layer": row["layer"],
                     **{k: row[k] for k in KEYS}, "n_tokens": row["n_tokens"]})  # fmt: skip
    card.sort(key=lambda r: (r["family"], r["sparsity/l0"]))
    write_json(ZOO_DIR / "tiny" / "saes" / "frontier.json", card)

    print(
        "| family | variant | L0 | nmse | expl. var. | CE with SAE | CE loss recovered | KL "
        "| dead |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in card:
        print(
            f"| {r['family']} | {r['variant']} | {r['sparsity/l0']:.1f} "
            f"| {r['reconstruction/nmse']:.4f} | {r['reconstruction/explained_variance']:.3f} "
            f"| {r['downstream/ce_sae']:.3f} | {r['downstream/ce_loss_recovered']:.4f} "
            f"| {r['downstream/kl']:.4f} | {r['density/dead_fraction']:.3f} |"
        )
    families = sorted({r["family"] for r in card})
    for key, label, best in (
        ("reconstruction/nmse", "nmse", min),
        ("downstream/ce_loss_recovered", "CE loss recovered", max),
    ):
        print(f"\n{label} at matched L0 (log-linear interpolation; - : outside the recipe's L0s)\n")
        print("| L0 | " + " | ".join(families) + " | best |")
        print("|---:|" + "---:|" * (len(families) + 1))
        for l0 in MATCHED:
            values = {
                f: at_l0([(r["sparsity/l0"], r[key]) for r in card if r["family"] == f], l0)
                for f in families
            }
            known = {f: v for f, v in values.items() if v is not None}
            winner = best(known, key=known.get) if known else "-"
            cells = " | ".join("-" if v is None else f"{v:.4f}" for v in values.values())
            print(f"| {l0} | {cells} | {winner} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
