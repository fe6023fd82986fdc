"""What each `precision=` costs in fidelity and buys in speed.

For each precision this machine can run (32 and bf16 everywhere, tf32 on CUDA), `saelab eval`
with all plugins on the same tokens, on two models: the bundled tiny model with its layer-2
TopK SAE (`experiment=tiny`: a trained model and SAE), and GPT-2-small-shaped `random_gpt2`
with a random 32k TopK SAE at layer 6 (the shapes of OpenAI's release). Reports tokens/s, the
speedup over fp32, and every metric's drift from fp32 (absolute, and relative to the value).

    python -m benchmarks.precision [--n-tokens 4096] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.eval_throughput import overrides, run_cli, setup, timing
from saelab import Autoencoder
from saelab.io import write_json

EVALS = "evals=[reconstruction,downstream,density]"


def precisions() -> list[str]:
    return ["32", "tf32", "bf16"] if torch.cuda.is_available() else ["32", "bf16"]


def drift(metrics: dict[str, float], reference: dict[str, float]) -> dict[str, dict]:
    out = {}
    for key, ref in reference.items():
        if isinstance(ref, (int, float)) and isinstance(metrics.get(key), (int, float)):
            absolute = abs(metrics[key] - ref)
            out[key] = {"abs": absolute, "rel": absolute / abs(ref) if ref else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, default=4096, help="for random_gpt2")
    parser.add_argument("--tiny-tokens", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.json"))
    args = parser.parse_args()

    report: dict = {"setup": setup(args), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sae_path = Path(tmp) / "sae_32k.pt"
        torch.save(Autoencoder.random(32768, 768, k=32).state_dict(), sae_path)
        cases = {
            "tiny (bundled, layer-2 TopK)": [
                "experiment=tiny", "logger=none", f"data.n_tokens={args.tiny_tokens}",
            ],
            "random_gpt2 (GPT-2 small shape, 32k TopK)": [
                *overrides(args, sae_path), f"data.n_tokens={args.n_tokens}",
            ],
        }  # fmt: skip
        for case, case_overrides in cases.items():
            runs = {
                p: timing(run_cli(Path(tmp), ["eval", *case_overrides, EVALS, f"precision={p}"])[0])
                for p in precisions()
            }
            reference = runs["32"]
            for r in runs.values():
                r["speedup"] = r["tokens_per_s"] / reference["tokens_per_s"]
                r["drift"] = drift(r["metrics"], reference["metrics"])
            report["models"][case] = runs

    for case, runs in report["models"].items():
        print(case)
        keys = [k for k in runs["32"]["drift"] if not k.startswith("density/hist")]
        print(f"  {'precision':<10}{'tokens/s':>10}{'speedup':>9}  largest relative drifts")
        for p, r in runs.items():
            worst = sorted(keys, key=lambda k: -(r["drift"][k]["rel"] or 0))[:3]
            text = ", ".join(f"{k} {r['drift'][k]['rel']:.1e}" for k in worst) if p != "32" else ""
            print(f"  {p:<10}{r['tokens_per_s']:>10.0f}{r['speedup']:>8.2f}x  {text}")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
