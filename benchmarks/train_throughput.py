"""Training throughput of a 768 -> 32768, k=32 TopK SAE on stored activations (no model forward).

Times one full optimizer step of `saelab.train.recipes.TopK` (fused sparse kernels: sparse encoder
backward, gather decoder) against the same recipe written with plain dense autograd (topk ->
scatter into dense latents -> dense matmuls), interleaved in one run, and a plain `torch.mm`
of the encoder's shape. The sparse step's FLOP/s is reported as a fraction of that matmul's:
the encoder's forward matmul is the one dense product TopK cannot avoid.

Each other recipe (BatchTopK, Matryoshka, Multi-TopK, JumpReLU, ReLU+L1: `RECIPES`) is timed in
the same run on the same shapes and reported as tokens/s and as a fraction of TopK's.

    python benchmarks/train_throughput.py [--tokens 4096] [--n-latents 32768] [--device cuda]
        [--repeats 5] [--warmup 1] [--recipes-only] [--out FILE]

`--recipes-only` skips the dense-autograd baseline and the matmul (on 2 CPU cores a step of a
dense recipe at these shapes is minutes: `--recipes-only --repeats 1 --warmup 0` is the
quickest full-shape comparison).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from saelab.io import write_json
from saelab.train.recipes import (
    BatchTopK,
    JumpReLU,
    Matryoshka,
    MultiTopK,
    Recipe,
    ReluL1,
    StepOutput,
    TopK,
)


class DenseTopK(TopK):
    """The same loss through dense autograd: the baseline the kernels must beat."""

    def loss(self, sae, x, mse_scale):
        x, _ = sae.preprocess(x.float())
        pre = F.linear(x - sae.pre_bias, sae.W_enc, sae.latent_bias)
        top = pre.topk(self.k, dim=-1)
        latents = torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        recons = latents @ sae.W_dec + sae.pre_bias
        loss = mse_scale * (recons - x).pow(2).mean()
        return StepOutput(loss, top.indices.reshape(-1), {})


def recipes(n: int, k: int) -> dict[str, Recipe]:
    """Every training recipe at the same width and (where it has one) k."""
    return {
        "batchtopk": BatchTopK(n_latents=n, k=k),
        "matryoshka": Matryoshka(n_latents=n, k=k),
        "multi_topk": MultiTopK(n_latents=n, k=k),
        "jumprelu": JumpReLU(n_latents=n),
        "relu_l1": ReluL1(n_latents=n),
    }


def make_step(recipe: Recipe, x_all: torch.Tensor, n_tokens: int, seed: int) -> Callable[[], None]:
    sae, scale = recipe.build(x_all.shape[1], x_all[:8192], seed=seed)
    sae = sae.to(x_all.device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4, eps=6.25e-10)
    position = {"i": 0}

    def step() -> None:
        start = position["i"] % (len(x_all) - n_tokens)
        position["i"] += n_tokens
        out = recipe.loss(sae, x_all[start : start + n_tokens], scale)
        out.loss.backward()
        recipe.project_decoder_grad(sae)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recipe.normalize_decoder(sae)

    return step


def median_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, device: str, warmup: int = 1
) -> dict:
    """Each function's median time over `repeats` interleaved rounds, after `warmup` rounds."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per optimizer step")
    parser.add_argument("--n-latents", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--recipes-only", action="store_true", help="no dense baseline, matmul")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    d, n, k, N = 768, args.n_latents, 32, args.tokens

    # stand-in for cached activations: a GPT-2-like residual stream with a few large dimensions
    g = torch.Generator().manual_seed(0)
    scale = 1 + 4 * (torch.rand(d, generator=g) > 0.98)
    x_all = torch.randn(4 * N + 8192, d, generator=g) * scale
    x_all = x_all.to(args.device)
    a, b = torch.randn(N, d, device=args.device), torch.randn(d, n, device=args.device)
    fns = {
        "sparse": make_step(TopK(n_latents=n, k=k), x_all, N, seed=0),
        **{name: make_step(recipe, x_all, N, seed=0) for name, recipe in recipes(n, k).items()},
    }
    if not args.recipes_only:
        fns["dense"] = make_step(DenseTopK(n_latents=n, k=k), x_all, N, seed=0)
        fns["matmul"] = lambda: torch.mm(a, b)
    seconds = median_seconds(fns, args.repeats, args.device, args.warmup)

    report = {
        "setup": {
            "d": d,
            "n_latents": n,
            "k": k,
            "tokens_per_step": N,
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "warmup": args.warmup,
        },
        "recipes_tokens_per_s": {name: N / seconds[name] for name in ("sparse", *recipes(n, k))},
        "recipes_over_topk": {
            name: seconds["sparse"] / seconds[name] for name in ("sparse", *recipes(n, k))
        },
        "seconds": seconds,
    }
    if not args.recipes_only:
        step_flops = 2 * N * d * n + 2 * 2 * N * k * d + 3 * 2 * N * k * d  # encoder + sparse
        matmul_flops_per_s = 2 * N * d * n / seconds["matmul"]
        report |= {
            "tokens_per_s": {"sparse": N / seconds["sparse"], "dense": N / seconds["dense"]},
            "sparse_over_dense": seconds["dense"] / seconds["sparse"],
            "matmul_tflop_per_s": matmul_flops_per_s / 1e12,
            "sparse_step_tflop_per_s": step_flops / seconds["sparse"] / 1e12,
            "fraction_of_matmul": step_flops / seconds["sparse"] / matmul_flops_per_s,
        }
        print(
            f"tokens/s  sparse {report['tokens_per_s']['sparse']:,.0f}   "
            f"dense {report['tokens_per_s']['dense']:,.0f}   "
            f"ratio {report['sparse_over_dense']:.2f}x"
        )
        print(
            f"sparse step at {report['fraction_of_matmul']:.0%} of a plain torch.mm "
            f"({report['matmul_tflop_per_s']:.3f} TFLOP/s) on {args.device}"
        )
    print(f"  {'topk':<11} {report['recipes_tokens_per_s']['sparse']:>10,.0f} tokens/s")
    for name in recipes(n, k):
        print(
            f"  {name:<11} {report['recipes_tokens_per_s'][name]:>10,.0f} tokens/s  "
            f"{report['recipes_over_topk'][name]:.2f}x TopK's"
        )
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
