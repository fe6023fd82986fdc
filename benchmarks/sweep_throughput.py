"""Sweep throughput: `saelab sweep` (one pass) against a plain multirun, and the limit model.

Synthetic 32k-latent TopK SAEs at `--layers` x {resid_post_mlp, resid_delta_attn} of
`random_gpt2` (GPT-2 small shape), all on the same token budget. For all plugins and for
reconstruction + density alone, in one run: the wall time of the fused sweep and of a plain
`saelab eval -m` multirun (each job a process that loads the model and runs its own
forwards), and the limit model (`benchmarks/limit_model.py`) timed alone. Prints a table and
writes JSON.

    python -m benchmarks.sweep_throughput [--n-tokens 2048] [--layers 12] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.limit_model import limit_seconds
from saelab import Autoencoder
from saelab.data.tokens import RandomTokens
from saelab.io import write_json
from saelab.sources.models import random_gpt2
from saelab.sources.places import Place

LOCATIONS = ("resid_post_mlp", "resid_delta_attn")
EVALS = {
    "all_plugins": "evals=[reconstruction,downstream,density]",
    "reconstruction_density": "evals=[reconstruction,density]",
}


def common(args: argparse.Namespace) -> list[str]:
    return [
        "model=random_gpt2",
        "data=random_tokens",
        f"data.n_tokens={args.n_tokens}",
        f"data.batch_size={args.batch_size}",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def sweep_entries(saes: Path, places: list[tuple[str, int]]) -> list[str]:
    """`sweep.saes` overrides naming the file `<location>_<layer>.pt` in `saes` per place."""
    entries = []
    for location, layer in places:
        entry = f"+sweep.saes.{location}_{layer}"
        entries += [
            f"{entry}._target_=saelab.sae.checkpoints.Files",
            f"{entry}.path={saes / f'{location}_{layer}.pt'}",
            f"{entry}.location={location}",
            f"{entry}.layer={layer}",
        ]
    return entries


def fused(saes: Path, places: list[tuple[str, int]], evals: str, args, cwd: Path) -> dict:
    """Wall time of the process, and of its test loop (read from the results)."""
    entries = sweep_entries(saes, places)
    command = [sys.executable, "-m", "saelab", "sweep", *common(args), "sae=none", evals]
    out = cwd / f"fused_{len(list(cwd.glob('fused_*')))}"
    wall = timed([*command, *entries, "sweep.memory_budget=1e12", f"hydra.run.dir={out}"], cwd)
    provenance = json.loads(next(out.rglob("metrics.json")).read_text())["provenance"]
    return {"wall_s": wall, "loop_s": provenance["seconds_test_loop"]}


def multirun(saes: Path, layers: int, evals: str, args, cwd: Path) -> float:
    command = [sys.executable, "-m", "saelab", "eval", "-m", *common(args), evals, "sae=file"]
    sweep = [
        f"sae.path={saes}/${{location}}_${{layer}}.pt",
        f"layer=range(0,{layers})",
        f"location={','.join(LOCATIONS)}",
    ]
    return timed([*command, *sweep], cwd)


def limit(saes: Path, places: list[tuple[str, int]], downstream: bool, args) -> float:
    model = random_gpt2(seed=0)
    tokens = RandomTokens().contexts(None, model.vocab_size, args.n_tokens // 64, 64, 50256, 0)
    loaded = [
        (
            Place(location, layer).hook,
            layer,
            Autoencoder.from_state_dict(torch.load(saes / f"{location}_{layer}.pt")),
        )
        for location, layer in places
    ]
    return limit_seconds(model, loaded, tokens, args.batch_size, downstream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--n-latents", type=int, default=32768)
    out = Path("benchmarks/results/sweep_throughput.json")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args()
    places = [(location, layer) for layer in range(args.layers) for location in LOCATIONS]

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        saes = Path(tmp)
        for i, (location, layer) in enumerate(places):
            sae = Autoencoder.random(args.n_latents, 768, k=32, seed=i)
            torch.save(sae.state_dict(), saes / f"{location}_{layer}.pt")
        for name, evals in EVALS.items():
            one_pass = fused(saes, places, evals, args, saes)
            run = runs[name] = {
                "fused_s": one_pass["wall_s"],
                "fused_loop_s": one_pass["loop_s"],
                "multirun_s": multirun(saes, args.layers, evals, args, saes),
                "limit_s": limit(saes, places, name == "all_plugins", args),
            }
            run["fused_speedup_over_multirun"] = run["multirun_s"] / run["fused_s"]
            run["fused_loop_over_limit"] = run["fused_loop_s"] / run["limit_s"]

    report = {
        "setup": {
            "model": "random_gpt2 (GPT-2 small shape)",
            "saes": f"{len(places)} TopK 768 -> {args.n_latents}, k=32",
            "places": f"layers 0-{args.layers - 1} x {', '.join(LOCATIONS)}",
            "n_tokens": args.n_tokens,
            "batch_size": args.batch_size,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "note": "fused and multirun: wall times of whole processes (model load included); "
            "fused loop: the sweep's test loop; limit: the forwards and SAE work alone",
        },
        "runs": runs,
    }
    print(
        f"{'plugins':<24}{'fused':>8}{'loop':>8}{'multirun':>10}{'limit':>8}{'speedup':>9}"
        f"{'loop/limit':>11}   (seconds)"
    )
    for name, r in runs.items():
        print(
            f"{name:<24}{r['fused_s']:>8.1f}{r['fused_loop_s']:>8.1f}{r['multirun_s']:>10.1f}"
            f"{r['limit_s']:>8.1f}{r['fused_speedup_over_multirun']:>8.2f}x"
            f"{r['fused_loop_over_limit']:>10.2f}x"
        )
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
