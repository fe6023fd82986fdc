"""Where the time goes on a GPU: the device's matmul roofline, then eval, a 24-SAE sweep, the
export and a training step at realistic sizes, each as tokens/s and a fraction of the roofline.

1. Roofline: square matmuls (4096^3 on CUDA) at fp32, TF32 and bf16, warm-up excluded.
2. The batch size: the eval (all plugins) at each of `--batch-sizes` on a short run; the
   fastest is used from then on.
3. Each part runs the real CLI on `random_gpt2` (GPT-2 small shape) with random 32k TopK SAEs
   at `--precision` (bf16 on CUDA by default), twice: at `--n-tokens` and at twice that. The
   rate is the difference of tokens over the difference of test-loop seconds, so process
   start, model load and the first batches' warm-up cancel. Parts: eval with all plugins and
   with reconstruction + density (layer 6), a sweep of 24 SAEs (12 layers x 2 locations), the
   export of one SAE, and training steps of a TopK SAE on stored activations (batch 4096).
4. The arithmetic per token is counted from the shapes (`flop_per_token`), so the fraction of
   the roofline is tokens/s x FLOP/token / (the roofline at the precision used). The share of
   the test loop by part (model forwards, SAE, plugins) comes from each run's provenance.

On a machine without CUDA it is a smoke run at small sizes (`--smoke` is implied).

    python -m benchmarks.gpu [--precision bf16] [--n-tokens 1048576] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.eval_throughput import run_cli, timing
from benchmarks.sweep_throughput import LOCATIONS, sweep_entries
from benchmarks.train_throughput import make_step, median_seconds
from saelab import Autoencoder
from saelab.io import write_json
from saelab.train.recipes import TopK

D, N_LAYERS, VOCAB, N_CTX, K = 768, 12, 50257, 64, 32
ROOFLINE_PRECISION = {"32": "fp32", "tf32": "tf32", "bf16": "bf16"}


def roofline(device: str, size: int, repeats: int = 10) -> dict[str, float]:
    """Matmul TFLOP/s of the device at each precision it has."""
    kinds = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False)}
    if device == "cuda":
        kinds["tf32"] = (torch.float32, True)
    out = {}
    for name, (dtype, tf32) in kinds.items():
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        seconds = median_seconds({name: lambda a=a, b=b: a @ b}, repeats, device)[name]
        torch.backends.cuda.matmul.allow_tf32 = previous
        out[name] = 2 * size**3 / seconds / 1e12
    return out


def block_flop() -> int:
    """One GPT-2 block per token: QKV, output, MLP in and out (24 d^2) and attention's two
    products over the context (4 n_ctx d, computed whole by the kernels)."""
    return 24 * D * D + 4 * N_CTX * D


def flop_per_token(part: str, n_latents: int, layers: int) -> float:
    """The forward arithmetic of each part, per evaluated token (multiply-add = 2 FLOP)."""
    unembed, sae = 2 * D * VOCAB, 2 * D * n_latents
    full = N_LAYERS * block_flop() + unembed
    from_layer = lambda layer: (N_LAYERS - layer) * block_flop() + unembed  # noqa: E731
    if part == "eval_all_plugins":  # clean forward + spliced and ablated from layer 6
        return full + 2 * from_layer(6) + sae
    if part in ("eval_reconstruction_density", "export"):  # stops after block 6
        return 7 * block_flop() + sae
    if part == "sweep_all_plugins":  # each SAE at its own hook: spliced + ablated there
        return full + sum(2 * from_layer(layer) + sae for layer in range(layers) for _ in LOCATIONS)
    if part == "sweep_reconstruction_density":
        return layers * block_flop() + layers * len(LOCATIONS) * sae
    if part == "train_step":  # the encoder's dense product; sparse decode and grads are O(k d)
        return 2 * D * n_latents + 7 * 2 * K * D
    raise KeyError(part)


def rate(workdir: Path, command: list[str], n_tokens: int) -> dict:
    """Tokens/s from runs at n and 2n tokens (warm-up and start cancel), and the larger run's
    time by part. Where noise outweighs the difference (a smoke run's few batches), the larger
    run's own rate, warm-up included, and `warm_up_included` says so."""
    small = timing(run_cli(workdir, [*command, f"data.n_tokens={n_tokens}"])[0])
    large = timing(run_cli(workdir, [*command, f"data.n_tokens={2 * n_tokens}"])[0])
    seconds = large["seconds"] - small["seconds"]
    noisy = seconds <= 0.1 * large["seconds"]
    difference = (large["tokens"] - small["tokens"]) / seconds if not noisy else None
    return {
        "tokens_per_s": large["tokens_per_s"] if noisy else difference,
        "warm_up_included": noisy,
        "seconds_at_2n": large["seconds"],
        "share_by_part": large["share_by_part"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--precision", default="bf16" if cuda else "32")
    parser.add_argument("--n-tokens", type=int, default=1 << 20, help="eval, export")
    parser.add_argument("--sweep-tokens", type=int, default=1 << 18)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--n-latents", type=int, default=32768)
    parser.add_argument("--layers", type=int, default=N_LAYERS, help="sweep: layers 0..n-1")
    parser.add_argument("--smoke", action="store_true", help="small sizes (implied without CUDA)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke or not cuda:
        args.n_tokens, args.sweep_tokens, args.batch_sizes = 512, 512, [4, 8]
        args.n_latents, args.layers = 4096, 2
    device = "cuda" if cuda else "cpu"
    out = args.out or Path(f"benchmarks/results/gpu_{device}.json")

    report: dict = {
        "setup": {
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "precision": args.precision,
            "model": "random_gpt2 (GPT-2 small shape), n_ctx 64",
            "saes": f"TopK 768 -> {args.n_latents}, k={K}",
            "n_tokens": [args.n_tokens, 2 * args.n_tokens],
            "sweep": f"{args.layers * len(LOCATIONS)} SAEs, layers 0-{args.layers - 1} x "
            f"{', '.join(LOCATIONS)}, {args.sweep_tokens} and twice that tokens",
        },
        "roofline_tflop_per_s": roofline(device, 4096 if cuda else 1024),
    }
    peak = report["roofline_tflop_per_s"][ROOFLINE_PRECISION[args.precision]] * 1e12
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for layer in range(args.layers):
            for location in LOCATIONS:
                sae = Autoencoder.random(args.n_latents, D, k=K, seed=layer)
                torch.save(sae.state_dict(), root / f"{location}_{layer}.pt")
        places = [(loc, layer) for layer in range(args.layers) for loc in LOCATIONS]
        layer = min(6, args.layers - 1)
        base = ["model=random_gpt2", "data=random_tokens", "logger=none",
                f"precision={args.precision}"]  # fmt: skip
        one = ["sae=file", f"sae.path={root / f'resid_post_mlp_{layer}.pt'}", f"layer={layer}",
               "location=resid_post_mlp"]  # fmt: skip
        all_plugins = "evals=[reconstruction,downstream,density]"
        probe_tokens = args.batch_sizes[-1] * N_CTX * 4
        tried = {}
        for batch in args.batch_sizes:
            command = ["eval", *base, *one, all_plugins, f"data.batch_size={batch}"]
            run = timing(run_cli(root, [*command, f"data.n_tokens={probe_tokens}"])[0])
            tried[batch] = run["tokens_per_s"]
        batch = max(tried, key=tried.get)
        report["batch_size"] = {"tried_tokens_per_s": tried, "chosen": batch}
        base.append(f"data.batch_size={batch}")

        commands = {
            "eval_all_plugins": (["eval", *base, *one, all_plugins], args.n_tokens),
            "eval_reconstruction_density": (
                ["eval", *base, *one, "evals=[reconstruction,density]"], args.n_tokens),
            "sweep_all_plugins": (["sweep", *base, "sae=none", all_plugins,
                                   "sweep.memory_budget=1e12", *sweep_entries(root, places)],
                                  args.sweep_tokens),
            "sweep_reconstruction_density": (
                ["sweep", *base, "sae=none", "evals=[reconstruction,density]",
                 "sweep.memory_budget=1e12", *sweep_entries(root, places)],
                args.sweep_tokens),
            "export": (["export", *base, *one], args.n_tokens),
        }  # fmt: skip
        parts = {}
        for name, (command, n_tokens) in commands.items():
            started = time.perf_counter()
            parts[name] = rate(root, command, n_tokens)
            parts[name]["wall_s"] = time.perf_counter() - started

    train_batch = 4096
    x = torch.randn(4 * train_batch + 8192, D, device=device)
    step = make_step(TopK(n_latents=args.n_latents, k=K), x, train_batch, seed=0)
    seconds = median_seconds({"train_step": step}, 5, device)["train_step"]
    parts["train_step"] = {"tokens_per_s": train_batch / seconds, "share_by_part": {}}

    for name, part in parts.items():
        flop = flop_per_token(name, args.n_latents, args.layers)
        part["gflop_per_token"] = flop / 1e9
        part["fraction_of_roofline"] = part["tokens_per_s"] * flop / peak
    report["parts"] = parts
    # OpenAI's v5 family at 12 layers x 4 residual-width locations: twice the SAEs (and their
    # spliced forwards) of the 24-SAE sweep, whose clean forward is shared
    n_saes = args.layers * len(LOCATIONS)
    report["estimate_48_sae_sweep_2^20_tokens_s"] = (
        2**20 / parts["sweep_all_plugins"]["tokens_per_s"] * 48 / n_saes
    )
    print("roofline TFLOP/s: " + ", ".join(
        f"{k} {v:.1f}" for k, v in report["roofline_tflop_per_s"].items()))  # fmt: skip
    print(f"batch size {batch} (tokens/s by batch size: {tried})")
    print(f"{'part':<30}{'tokens/s':>12}{'GFLOP/tok':>10}{'roofline':>10}  share of the loop")
    for name, part in parts.items():
        share = ", ".join(f"{k} {v:.0%}" for k, v in part["share_by_part"].items())
        print(f"{name:<30}{part['tokens_per_s']:>12,.0f}{part['gflop_per_token']:>10.3f}"
              f"{part['fraction_of_roofline']:>10.1%}  {share}")  # fmt: skip
    print(f"a 48-SAE sweep (all plugins) over 2^20 tokens: about "
          f"{report['estimate_48_sae_sweep_2^20_tokens_s']:,.0f} s")  # fmt: skip
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
