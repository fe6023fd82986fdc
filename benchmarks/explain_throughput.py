"""Explanations per second (N2G, `export.explain=true`) and the cost of ablation sparsity.

Runs the real CLI on a 32k TopK SAE at random GPT-2 small's layer `--layer` (random tokens):
an export with `explain.n_latents=--n-latents` (explain/seconds from metrics.json: latents/s,
tokens forwarded per latent), then `saelab eval evals=[ablation_sparsity]` (seconds per sampled
(position, latent) pair). With `--tiny`, also the bundled tiny model's plain export against
`export.explain=true` (512 latents by default), the issue's "within 3x" check.

    python -m benchmarks.explain_throughput [--n-tokens 2048] [--n-latents 32] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.eval_throughput import overrides, run_cli, setup
from saelab import Autoencoder
from saelab.io import write_json


def run(root: Path, name: str, args: list[str]) -> tuple[dict, dict]:
    """(provenance, metrics) of one CLI run in a folder of its own."""
    workdir = root / name
    workdir.mkdir()
    record, _ = run_cli(workdir, args)
    return record["provenance"], record["metrics"]


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
        sae_path = root / "sae_32k.pt"
        torch.save(Autoencoder.random(32768, 768, k=32).state_dict(), sae_path)
        common = [*overrides(args, sae_path), f"data.n_tokens={args.n_tokens}"]
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
            plain, _ = run(root, "tiny_plain", ["export", "experiment=tiny"])
            explained, found = run(root, "tiny_explain", ["export", "experiment=tiny",
                                                          "export.explain=true"])  # fmt: skip
            report["tiny_export"] = {
                "plain_seconds": plain["seconds"],
                "explain_seconds": explained["seconds"],
                "ratio": explained["seconds"] / plain["seconds"],
                "explain_f1": found["explain/f1"],
            }
    print(json.dumps(report, indent=2))
    write_json(args.out, report)


if __name__ == "__main__":
    main()
