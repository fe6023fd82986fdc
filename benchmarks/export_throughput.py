"""Export throughput: every latent of a 32k TopK SAE on random GPT-2 small.

Runs the real CLI: `saelab export` at two token counts (peak memory must stay flat: the
per-latent state does not grow with tokens), then `saelab eval evals=[reconstruction,density]`
on the larger count for the ratio. Reports the test loop's tokens/s, the share of its time in
the model forward, the time spent writing the files, peak RSS and bytes per latent. A few
thousand random tokens fill few latents' example sets, so bytes per latent at the defaults is
also measured on the bundled tiny SAE's export of its default 65k tokens, where most are full.

    python -m benchmarks.export_throughput [--n-tokens 4096 16384] [--out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.eval_throughput import overrides, run_cli, setup
from saelab import Autoencoder
from saelab.io import write_json


def summary(record: dict, peak_gib: float) -> dict:
    provenance = record["provenance"]
    loop = provenance["seconds_test_loop"]
    parts = provenance["seconds_by_part"]
    return {
        "tokens": provenance["n_tokens"],
        "seconds_test_loop": loop,
        "tokens_per_s": provenance["n_tokens"] / loop,
        "model_forward_share": parts.get("model_forward", 0) / loop,
        "seconds_after_loop": provenance["seconds"] - loop,  # writing files, logit tables
        "peak_rss_gib": round(peak_gib, 2),
    }


def record_sizes(workdir: Path) -> dict:
    """Bytes per latent of an export, overall and over the latents whose example sets are full
    (n_top top examples and a full reservoir)."""
    manifest_path = next(workdir.rglob("manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    settings, full = manifest["settings"], []
    for path in (manifest_path.parent / "latents").glob("*.json.gz"):
        record = json.loads(gzip.decompress(path.read_bytes()))
        if len(record["top"]) == settings["n_top"] and record["n_fired"] >= settings["reservoir"]:
            full.append(path.stat().st_size)
    return {
        "bytes_per_latent": manifest["bytes_per_latent"],
        "full_latents": len(full),
        "bytes_per_full_latent": round(sum(full) / max(len(full), 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tokens", type=int, nargs=2, default=[4096, 16384])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/export_throughput.json")
    )
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sae_path = root / "sae_32k.pt"
        torch.save(Autoencoder.random(32768, 768, k=32).state_dict(), sae_path)
        common = overrides(args, sae_path)
        for n in args.n_tokens:
            workdir = root / f"export_{n}"
            workdir.mkdir()
            record, peak = run_cli(workdir, ["export", *common, f"data.n_tokens={n}"])
            runs[f"export_{n}"] = summary(record, peak) | record_sizes(workdir)
        workdir = root / "eval"
        workdir.mkdir()
        n = args.n_tokens[-1]
        evals = ["eval", *common, f"data.n_tokens={n}", "evals=[reconstruction,density]"]
        runs["eval_reconstruction_density"] = summary(*run_cli(workdir, evals))
        workdir = root / "tiny"
        workdir.mkdir()
        runs["export_tiny_65k"] = summary(*run_cli(workdir, ["export", "experiment=tiny"]))
        runs["export_tiny_65k"].update(record_sizes(workdir))

    export, eval_ = runs[f"export_{n}"], runs["eval_reconstruction_density"]
    report = {
        "setup": setup(args),
        "runs": runs,
        "export_loop_cost_vs_eval": eval_["tokens_per_s"] / export["tokens_per_s"],
    }
    print(
        f"{'run':<30}{'tokens/s':>10}{'model':>8}{'write s':>9}{'peak GiB':>10}"
        f"{'B/latent':>10}{'B/full':>8}{'full':>7}"
    )
    for name, r in runs.items():
        print(
            f"{name:<30}{r['tokens_per_s']:>10.0f}{r['model_forward_share']:>8.0%}"
            f"{r['seconds_after_loop']:>9.1f}{r['peak_rss_gib']:>10.2f}"
            f"{r.get('bytes_per_latent', 0):>10.0f}{r.get('bytes_per_full_latent', 0):>8.0f}"
            f"{r.get('full_latents', 0):>7}"
        )
    print(f"export test loop costs {report['export_loop_cost_vs_eval']:.2f}x the eval's")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
