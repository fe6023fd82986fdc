"""Explanations per second (N2G, `export.explain=true`) and the cost of ablation sparsity.

Runs the real CLI on a 32k TopK SAE at random GPT-2 small's layer `--layer` (random tokens):
an export with `explain.n_latents=--n-latents` (explain/seconds from metrics.json: latents/s,
tokens forwarded per latent), then `saelab eval evals=[ablation_sparsity]` (seconds per sampled
(position, latent) pair). With `--tiny`, also the bundled tiny model's plain export against
`export.explain=true` (512 latents by default), the issue's "within 3x" check, and the same
explained export of a random SAE of the bundled one's shape: is `explain/f1` a real signal?

    python -m benchmarks.explain_throughput [--n-tokens 2048] [--n-latents 32] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.eval_throughput import overrides, run_cli, setup
from saelab import Autoencoder
from saelab.export.explain import SCORES
from saelab.io import write_json
from saelab.sae.checkpoints import load
from saelab.sources.places import Place
from saelab.zoo import sae_path


def run(root: Path, name: str, args: list[str]) -> tuple[dict, dict]:
    """(provenance, metrics) of one CLI run in a folder of its own; the provenance's
    `seconds` (the task's own) gets `wall_seconds` beside it (the whole command's: start-up,
    imports and model loading too)."""
    workdir = root / name
    workdir.mkdir()
    started = time.perf_counter()
    record, _ = run_cli(workdir, args)
    wall = time.perf_counter() - started
    return record["provenance"] | {"wall_seconds": wall}, record["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=2048)
    parser.add_argument("--n-latents", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explain.json"))
    args = parser.parse_args()
    report: dict = {"setup": setup(args) | {"n_tokens": args.n_tokens}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_32k = root / "sae_32k.pt"
        torch.save(Autoencoder.random(32768, 768, k=32).state_dict(), random_32k)
        common = [*overrides(args, random_32k), f"data.n_tokens={args.n_tokens}"]
        explain = [f"explain.n_latents={args.n_latents}", "export.explain=true"]
        _, found = run(root, "explain", ["export", *common, *explain])
        report["explain_32k"] = {
            "latents": found["explain/n_explained"],
            "seconds": found["explain/seconds"],
            "latents_per_s": found["explain/n_explained"] / found["explain/seconds"],
            "tokens_forwarded_per_latent": found["explain/tokens_forwarded"]
            / max(found["explain/n_explained"], 1),
        }
        provenance, found = run(root, "ablation", ["eval", *common, "evals=[ablation_sparsity]"])
        pairs = found["ablation_sparsity/n_pairs"]
        report["ablation_sparsity_32k"] = {
            "pairs": pairs,
            "seconds_test_loop": provenance["seconds_test_loop"],
            "seconds_per_pair": provenance["seconds_test_loop"] / max(pairs, 1),
            "mean": found["ablation_sparsity/mean"],
            "baseline": found["ablation_sparsity/baseline"],
        }
        if args.tiny:
            explain = ["export", "experiment=tiny", "export.explain=true"]
            plain, _ = run(root, "tiny_plain", ["export", "experiment=tiny"])
            explained, found = run(root, "tiny_explain", explain)
            bundled = sae_path("tiny", "topk", Place("resid_post_mlp", 2))
            shape = load(path=str(bundled), check_model=False).sae
            random_path = root / "tiny_random.pt"
            random = Autoencoder.random(shape.n_latents, shape.n_inputs, k=shape.k)
            torch.save(random.state_dict(), random_path)
            _, found_random = run(root, "tiny_random", [*explain, "sae=file",
                                                        f"sae.path={random_path}"])  # fmt: skip
            report["tiny_export"] = {
                "plain_seconds": plain["seconds"],
                "plain_wall_seconds": plain["wall_seconds"],
                "explain_seconds": explained["seconds"],
                "explain_wall_seconds": explained["wall_seconds"],
                "ratio": explained["seconds"] / plain["seconds"],
                "ratio_wall": explained["wall_seconds"] / plain["wall_seconds"],
                **{f"trained_{k}": found[f"explain/{k}"] for k in SCORES},
                **{f"random_{k}": found_random[f"explain/{k}"] for k in SCORES},
            }
    print(json.dumps(report, indent=2))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
