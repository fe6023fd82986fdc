"""Evaluation throughput: tokens/s of `saelab eval` on random GPT-2 small with a 32k TopK SAE.

Runs the real CLI twice, side by side: all three plugins (the downstream plugin adds the
spliced and ablated forwards and needs logits), then only reconstruction + density (the
clean forward stops after the hooked layer). Reports tokens/s of the test loop and how its
time splits between model forwards, SAE work and plugins, and the test loop's time against the
limit model (`benchmarks/limit_model.py`) on the same tokens. Prints a table and writes JSON.

    python -m benchmarks.eval_throughput [--n-tokens 8192] [--layer 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.limit_model import limit_seconds
from saelab import Autoencoder
from saelab.data.tokens import RandomTokens
from saelab.io import write_json
from saelab.sources.models import random_gpt2
from saelab.sources.places import Place

CONFIGS = {
    "all_plugins": "evals=[reconstruction,downstream,density]",
    "reconstruction_density": "evals=[reconstruction,density]",
}


def overrides(args: argparse.Namespace, sae_path: Path) -> list[str]:
    """The SAE file at `args.layer`'s resid_post_mlp of random_gpt2, on random tokens."""
    return [
        "model=random_gpt2",
        "data=random_tokens",
        f"data.batch_size={args.batch_size}",
        f"layer={args.layer}",
        "location=resid_post_mlp",
        "sae=file",
        f"sae.path={sae_path}",
        "logger=none",
    ]


def setup(args: argparse.Namespace) -> dict:
    return {
        "model": "random_gpt2 (GPT-2 small shape)",
        "sae": "TopK 768 -> 32768, k=32",
        "layer": args.layer,
        "location": "resid_post_mlp",
        "n_ctx": 64,
        "batch_size": args.batch_size,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def run_cli(workdir: Path, args: list[str]) -> tuple[dict, float]:
    """One `saelab` command in a subprocess: the metrics.json it wrote (provenance and metrics)
    and its peak resident memory in GiB (wait4's maxrss)."""
    command = [sys.executable, "-m", "saelab", *args, "trainer.enable_progress_bar=false"]
    with open(workdir / "log.txt", "w") as log:
        child = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"saelab {' '.join(args)} failed: see {workdir / 'log.txt'}")
    newest = max(workdir.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text()), usage.ru_maxrss / 2**20


def timing(record: dict) -> dict:
    """Tokens/s of a run's test loop, its time by part, and its metrics."""
    provenance = record["provenance"]
    loop = provenance["seconds_test_loop"]
    parts = provenance["seconds_by_part"]
    return {
        "tokens": provenance["n_tokens"],
        "seconds": loop,
        "tokens_per_s": provenance["n_tokens"] / loop,
        "seconds_by_part": parts,
        "share_by_part": {k: v / loop for k, v in parts.items()},
        "metrics": record["metrics"],
    }


def run_eval(workdir: Path, sae_path: Path, evals: str, args: argparse.Namespace) -> dict:
    command = ["eval", *overrides(args, sae_path), f"data.n_tokens={args.n_tokens}", evals]
    return timing(run_cli(workdir, command)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_throughput.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sae_path = Path(tmp) / "sae_32k.pt"
        sae = Autoencoder.random(32768, 768, k=32)
        torch.save(sae.state_dict(), sae_path)
        results = {
            name: run_eval(Path(tmp), sae_path, evals, args) for name, evals in CONFIGS.items()
        }
    model = random_gpt2(seed=0)
    tokens = RandomTokens().contexts(None, model.vocab_size, args.n_tokens // 64, 64, 50256, 0)
    place = [(Place("resid_post_mlp", args.layer).hook, args.layer, sae)]
    for name, r in results.items():
        r["limit_s"] = limit_seconds(model, place, tokens, args.batch_size, name == "all_plugins")
        r["loop_over_limit"] = r["seconds"] / r["limit_s"]

    report = {
        "setup": setup(args),
        "runs": results,
        "speedup_without_downstream": results["reconstruction_density"]["tokens_per_s"]
        / results["all_plugins"]["tokens_per_s"],
    }
    print(f"{'run':<24}{'tokens/s':>10}{'model':>9}{'sae':>8}{'plugins':>9}{'/limit':>8}")
    for name, r in results.items():
        share = r["share_by_part"]
        print(
            f"{name:<24}{r['tokens_per_s']:>10.0f}{share.get('model_forward', 0):>9.0%}"
            f"{share.get('sae', 0):>8.0%}{share.get('plugins', 0):>9.0%}"
            f"{r['loop_over_limit']:>7.2f}x"
        )
    print(f"reconstruction+density is {report['speedup_without_downstream']:.2f}x faster")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
