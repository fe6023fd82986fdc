"""Time and peak memory of `saelab match` (decoder cosine, chunked) for two SAEs of given sizes.

The cost is one [n_A, d] @ [d, n_B] product, taken `chunk` rows of A at a time: time grows as
n_A x n_B x d, memory as (n_A + n_B) x d (the unit decoder rows) plus one chunk x n_B block
(`saelab.sae.match.CHUNK_BYTES`). Prints and writes JSON:

    python benchmarks/match_cost.py --latents-a 32768 --latents-b 32768 --d-model 768
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from saelab.sae.autoencoder import Autoencoder
from saelab.sae.match import match


def rss_mib() -> float:
    """The process's current resident memory (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latents-a", type=int, default=32768)
    p.add_argument("--latents-b", type=int, default=32768)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/match_cost.json"))
    args = p.parse_args()
    a = Autoencoder.random(args.latents_a, args.d_model, seed=0)
    b = Autoencoder.random(args.latents_b, args.d_model, seed=1)
    before = rss_mib()
    seconds = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        match(a, b, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = {
        "latents_a": args.latents_a, "latents_b": args.latents_b, "d_model": args.d_model,
        "device": args.device, "threads": torch.get_num_threads(),
        "seconds": [round(s, 3) for s in seconds], "best_seconds": round(min(seconds), 3),
        "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
        "peak_over_saes_mib": round(peak - before, 1),
        "saes_mib": round(sum(t.numel() * 4 for m in (a, b) for t in m.parameters()) / 2**20, 1),
    }  # fmt: skip
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result, indent=2))
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.write_text(json.dumps([*results, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
