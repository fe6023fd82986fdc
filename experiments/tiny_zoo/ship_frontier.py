"""Copy the frontier's trained SAEs into the zoo in float16 (the 18 fit in about 9.5 MB).

Each run of experiments/tiny_zoo/train_frontier.sh (`logs/train/runs/frontier_<recipe>_<l0>`)
becomes saelab/zoo/tiny/saes/frontier_<recipe>/l0_<l0>/resid_post_mlp/2.safetensors with its
saelab-format config, 2.json, beside it (`sae=... variant=l0_<l0>`; see the model card).

    python experiments/tiny_zoo/ship_frontier.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from saelab.io import atomic_write, write_json
from saelab.zoo import ZOO_DIR

RECIPES = ("topk", "relu_l1", "batchtopk", "jumprelu", "matryoshka", "multi_topk")
TARGETS = (8, 16, 32)
HOOK, LOCATION, LAYER = "blocks.2.hook_resid_post", "resid_post_mlp", 2


def ship(run: Path, out: Path) -> int:
    """Write `run`'s SAE as float16 under `out`; returns the bytes written."""
    source = run / "saes" / HOOK
    tensors = load_file(str(source / "sae.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    blob = safetensors_bytes(half)
    config = json.loads((source / "sae.json").read_text())
    atomic_write(out / f"{LAYER}.safetensors", lambda f: f.write(blob))
    write_json(out / f"{LAYER}.json", {**config, "dtype": "float16"})
    return len(blob)


def main(runs: Path = Path("logs/train/runs")) -> None:
    total = 0
    for recipe in RECIPES:
        for target in TARGETS:
            run = runs / f"frontier_{recipe}_{target}"
            if not (run / "train.json").is_file():
                sys.exit(f"{run} has not finished: run experiments/tiny_zoo/train_frontier.sh")
            out = ZOO_DIR / "tiny" / "saes" / f"frontier_{recipe}" / f"l0_{target}" / LOCATION
            total += ship(run, out)
    print(f"shipped {len(RECIPES) * len(TARGETS)} SAEs, {total / 1e6:.2f} MB of weights")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
