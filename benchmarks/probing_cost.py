"""The cost of the probing plugins per SAE, against the reconstruction + density eval of the
same run: random GPT-2 small with 32k TopK SAEs at one hook, on the bundled text.

One evaluation pass (as in `saelab sweep`) of two SAEs at the same hook with
reconstruction, density, probe and sparse_probing; each plugin's `compute` is timed per SAE.
The first SAE at a hook pays what the SAEs there share (the probe's channel baseline, the
task texts' forwards and the channels' probes of sparse_probing), the second only its own
work. The reference is a pass of one SAE with reconstruction + density alone on the same
tokens. Small by default (CPU): a slice of the tasks (`--max-train`, `--max-test` texts per
class). Prints a table and writes JSON.

`absorption` reads no evaluated batch (its prompts are its own), so its `compute` is timed
for the same two SAEs at the same hook outside the pass. `random_gpt2`'s byte tokenizer has
only 52 letter tokens, so its words are the bundled Shakespeare tokenizer's (3853 alphabetic
tokens; ids < 4096 are valid GPT-2 ids), `--absorption-words` of them (GPT-2's own 50257-token
vocabulary has many more; the cost is about linear in the words).

    python -m benchmarks.probing_cost [--n-tokens 2048] [--plugins probe absorption] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import lightning as L
import torch

from saelab import Autoencoder
from saelab.data.tokens import Bundled, TokenDataModule
from saelab.evals import (
    Absorption,
    Density,
    ProbeLoss,
    Reconstruction,
    SparseProbing,
    absorption,
    sparse_probing,
)
from saelab.evals.base import RunContext
from saelab.evals.evaluator import Evaluation, probe
from saelab.formats.base import Checkpoint
from saelab.io import write_json
from saelab.sources.models import bundled, random_gpt2
from saelab.sources.places import Place

PLACE = Place("resid_post_mlp", 6)
PLUGINS = ["probe", "sparse_probing", "absorption"]


def timed(plugin, seconds: dict, name: str):
    """`plugin` with its compute timed into `seconds[name]`."""
    compute = plugin.compute

    def run():
        started = time.perf_counter()
        out = compute()
        seconds[name] = time.perf_counter() - started
        return out

    plugin.compute = run
    return plugin


def evaluate(model, data, saes: list[Autoencoder], plugins) -> float:
    """Seconds of one test pass of `saes` with `plugins()` each."""
    probes = [
        probe(RunContext(model, PLACE, Checkpoint(sae, None, "memory"), data), plugins(i))
        for i, sae in enumerate(saes)
    ]
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    started = time.perf_counter()
    trainer.test(Evaluation(model, probes), datamodule=data, verbose=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-tokens", type=int, default=2048)
    parser.add_argument("--max-train", type=int, default=50)
    parser.add_argument("--max-test", type=int, default=25)
    parser.add_argument("--absorption-words", type=int, default=1000)
    parser.add_argument("--plugins", nargs="+", default=PLUGINS, choices=PLUGINS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probing_cost.json"))
    args = parser.parse_args()

    model = random_gpt2()
    data = TokenDataModule(Bundled("val"), n_tokens=args.n_tokens, batch_size=16)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    saes = [Autoencoder.random(32768, 768, k=32, seed=seed) for seed in (0, 1)]
    tasks = ["shakespeare_genre", "shakespeare_play"]

    base = evaluate(model, data, saes[:1], lambda i: {"reconstruction": Reconstruction(),
                                                      "density": Density()})  # fmt: skip
    seconds: list[dict] = [{}, {}]
    sparse_probing._CACHE.clear()

    def plugins(i: int) -> dict:
        chosen = {
            "reconstruction": Reconstruction(),
            "density": Density(),
            "probe": timed(ProbeLoss(max_tokens=args.n_tokens), seconds[i], "probe"),
            "sparse_probing": timed(
                SparseProbing(datasets=tasks, max_train=args.max_train, max_test=args.max_test),
                seconds[i], "sparse_probing",
            ),
        }  # fmt: skip
        return {k: v for k, v in chosen.items() if k not in PLUGINS or k in args.plugins}

    both = None
    if {"probe", "sparse_probing"} & set(args.plugins):
        both = evaluate(model, data, saes, plugins)
    if "absorption" in args.plugins:
        absorption._CACHE.clear()
        words = dataclasses.replace(model, tokenizer=bundled("tiny").tokenizer)
        for i, sae in enumerate(saes):
            plugin = Absorption(max_words=args.absorption_words)
            plugin.setup(RunContext(words, PLACE, Checkpoint(sae, None, "memory"), data))
            started = time.perf_counter()
            with torch.inference_mode():
                plugin.compute()
            seconds[i]["absorption"] = time.perf_counter() - started

    result = {
        "setup": {
            "model": "random_gpt2 (GPT-2 small shape)",
            "sae": "TopK 768 -> 32768, k=32",
            "hook": PLACE.name,
            "n_tokens": args.n_tokens,
            "probe_tokens": args.n_tokens,
            "sparse_probing_tasks": tasks,
            "max_train": args.max_train,
            "max_test": args.max_test,
            "absorption_words": args.absorption_words,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "seconds": {
            "reconstruction_density_one_sae": round(base, 2),
            "probing_pass_two_saes": None if both is None else round(both, 2),
            "first_sae": {k: round(v, 2) for k, v in seconds[0].items()},
            "second_sae": {k: round(v, 2) for k, v in seconds[1].items()},
        },
        "relative_to_reconstruction_density": {
            f"{plugin}_{which}": round(seconds[i][plugin] / base, 2)
            for plugin in args.plugins
            for i, which in enumerate(("first_sae_at_hook", "each_further_sae"))
        },
    }
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
