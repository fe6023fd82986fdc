"""The fixed cost per batch and per SAE: what dominates once a fast GPU makes arithmetic cheap.

On a model so small that its arithmetic is negligible (`random_gpt2` with 2 layers of width 64
and a 512-token vocabulary) and 256-latent TopK SAEs at its 10 places, times per batch:

- `evaluator`: the evaluator alone (`BatchEvaluator`: the capture forward, hooks, every SAE's
  encode/decode and every plugin's update) for 1, 10 and 40 SAEs; a least-squares line gives
  the cost per batch (the intercept) and per SAE (the slope);
- `loop`: the same inside Lightning's test loop (`trainer.test`), whose excess over the
  evaluator is Lightning's own cost per batch.

Plugins: reconstruction + density (the clean forward stops after the last hooked block), and
all three (spliced and ablated forwards). Prints a table and writes JSON.

    python -m benchmarks.overhead [--batches 40] [--batch-size 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch

from saelab import Autoencoder
from saelab.data.tokens import RandomTokens, TokenDataModule
from saelab.evals import Density, Downstream, Reconstruction
from saelab.evals.base import RunContext
from saelab.evals.evaluator import BatchEvaluator, Evaluation, probe
from saelab.io import write_json
from saelab.sources.models import random_gpt2

PLUGINS = {
    "reconstruction_density": lambda: {"reconstruction": Reconstruction(), "density": Density()},
    "all_plugins": lambda: {
        "reconstruction": Reconstruction(),
        "downstream": Downstream(),
        "density": Density(),
    },
}
N_SAES = (1, 10, 40)


def probes(model, data, n_saes: int, plugins: str) -> list:
    places = model.places()
    out = []
    for i in range(n_saes):
        place = places[i % len(places)]
        sae = Autoencoder.random(256, model.width(place.hook), k=8, seed=i)
        out.append(probe(RunContext.of_sae(sae, model, place, data), PLUGINS[plugins]()))
    return out


def evaluator_seconds(model, data, n_saes: int, plugins: str) -> float:
    """Seconds per batch of the evaluator alone, after one warm-up batch."""
    chosen = probes(model, data, n_saes, plugins)
    module = Evaluation(model, chosen)  # sets up the plugins
    evaluator = BatchEvaluator(model, module.probes)
    batches = list(data.test_dataloader())
    device = module.device
    with torch.no_grad():
        evaluator(batches[0]["tokens"].to(device), batches[0]["mask"].to(device))
        started = time.perf_counter()
        for batch in batches[1:]:
            evaluator(batch["tokens"].to(device), batch["mask"].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / (len(batches) - 1)


def loop_seconds(model, data, n_saes: int, plugins: str) -> float:
    """Seconds per batch of `trainer.test` (Lightning's loop around the evaluator)."""
    module = Evaluation(model, probes(model, data, n_saes, plugins))
    trainer = L.Trainer(
        accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.test(module, datamodule=data, verbose=False)
    return (time.perf_counter() - started) / len(data.test_dataloader())


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line."""
    solution = torch.linalg.lstsq(
        torch.tensor([[1.0, x] for x in xs], dtype=torch.float64),
        torch.tensor(ys, dtype=torch.float64)[:, None],
    ).solution
    return float(solution[0]), float(solution[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the cost measured is dispatch and Python, not arithmetic

    model = random_gpt2(n_layers=2, d_model=64, n_heads=4, n_ctx=args.n_ctx, vocab_size=512)
    data = TokenDataModule(
        RandomTokens(), args.batches * args.batch_size * args.n_ctx, args.n_ctx, args.batch_size
    )
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    report: dict = {
        "setup": {
            "model": "random_gpt2(n_layers=2, d_model=64, vocab_size=512)",
            "saes": "TopK 256 latents, k=8, over the 10 places",
            "batch": [args.batch_size, args.n_ctx],
            "batches": args.batches,
            "device": device.type,
            "torch_threads": torch.get_num_threads(),
        },
        "runs": {},
    }
    print(f"{'plugins':<24}{'part':<11}{'per batch':>11}{'per SAE':>10}   (ms)")
    for plugins in PLUGINS:
        run: dict = {}
        for part, timer in (("evaluator", evaluator_seconds), ("loop", loop_seconds)):
            seconds = [timer(model, data, n, plugins) for n in N_SAES]
            per_batch, per_sae = fit(list(N_SAES), seconds)
            run[part] = {
                "seconds_per_batch_by_n_saes": dict(zip(map(str, N_SAES), seconds, strict=True)),
                "fixed_ms_per_batch": per_batch * 1e3,
                "ms_per_sae_per_batch": per_sae * 1e3,
            }
            print(f"{plugins:<24}{part:<11}{per_batch * 1e3:>11.2f}{per_sae * 1e3:>10.2f}")
        run["lightning_ms_per_batch"] = (
            run["loop"]["fixed_ms_per_batch"] - run["evaluator"]["fixed_ms_per_batch"]
        )
        report["runs"][plugins] = run
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
