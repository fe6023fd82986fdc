"""Time one TopK-SAE training step: saelab.sae.kernels against plain dense autograd.

The sparse step should run near the speed of the one dense product it cannot avoid, the
encoder's [N, d] @ [d, n] matmul, so that matmul is timed too and the sparse step's FLOP/s is
reported as a fraction of it. `--strategies` also times, on the same random latents, the
alternatives that were considered for the three sparse products in saelab.sae.kernels.

    python benchmarks/sae_kernels.py --device cpu --tokens 4096 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from saelab.sae.kernels import sampled_rowdot, sparse_decode, sparse_t_matmul, topk_at


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--latents", type=int, default=32768)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, methods interleaved")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--strategies", action="store_true", help="also time the rejected kernels")
    p.add_argument("--profile", action="store_true", help="print the sparse step's top kernels")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sae_kernels.json"))
    return p.parse_args()


def median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str):
    """Median seconds of each fn; rounds interleave the fns so background load hits all alike."""
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
    return {name: statistics.median(ts) for name, ts in times.items()}


def sae_steps(x: Tensor, params: list[Tensor], k: int) -> dict[str, Callable[[], None]]:
    """Forward + backward of the MSE loss, sparse and dense; both leave grads in params."""
    pre_bias, W_enc, b_enc, W_dec = params

    def sparse() -> None:
        centred = x - pre_bias
        pre = torch.addmm(b_enc, centred, W_enc.t()).detach()  # as the recipe: choose without grad
        indices, values = topk_at(centred, W_enc, b_enc, pre, k)
        F.mse_loss(sparse_decode(indices, values, W_dec) + pre_bias, x).backward()

    def dense() -> None:
        pre = torch.addmm(b_enc, x - pre_bias, W_enc.t())
        top = pre.topk(k, dim=-1)
        latents = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        F.mse_loss(latents @ W_dec + pre_bias, x).backward()

    def zeroing(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for p in params:
                p.grad = None
            step()

        return run

    return {"sparse": zeroing(sparse), "dense": zeroing(dense)}


def gtx_alternatives(indices: Tensor, w: Tensor, X: Tensor, n: int) -> dict[str, Callable]:
    """Ways to compute G^T @ X [n, d]; `csr_argsort` is the one saelab.sae.kernels uses."""
    N, k = indices.shape
    flat = indices.reshape(-1)

    def index_add(rows: int) -> Tensor:
        out = X.new_zeros(n, X.shape[1])
        for s in range(0, N, rows):  # [rows * k, d] temporary per chunk
            contrib = w[s : s + rows, :, None] * X[s : s + rows, None, :]
            out.index_add_(0, indices[s : s + rows].reshape(-1), contrib.flatten(0, 1))
        return out

    def coo() -> Tensor:
        rows = torch.arange(N, device=X.device).repeat_interleave(k)
        G_t = torch.sparse_coo_tensor(
            torch.stack([flat, rows]), w.reshape(-1), (n, N), check_invariants=False
        )
        return torch.sparse.mm(G_t, X)

    def csr_transpose() -> Tensor:  # G [N, n] is CSR for free; PyTorch transposes it
        crow = torch.arange(0, N * k + 1, k, device=X.device)
        return torch.sparse_csr_tensor(crow, flat, w.reshape(-1), (N, n)).t() @ X

    def embedding_bag_backward() -> Tensor:
        table = X.new_zeros(1, X.shape[1]).expand(n, -1).requires_grad_()
        with torch.enable_grad():
            out = F.embedding_bag(indices, table, per_sample_weights=w, mode="sum")
            return torch.autograd.grad(out, table, X)[0]

    return {
        "gtx/csr_argsort": lambda: sparse_t_matmul(indices, w, X, n),
        "gtx/csr_transpose": csr_transpose,
        "gtx/index_add": lambda: index_add(N),
        "gtx/index_add_chunk256": lambda: index_add(256),
        "gtx/coo_sparse_mm": coo,
        "gtx/embedding_bag_backward": embedding_bag_backward,
    }


def gather_alternatives(indices: Tensor, w: Tensor, table: Tensor) -> dict[str, Callable]:
    """Ways to compute G @ table [N, d] (decode, encoder input grad); saelab: csr_mm on CUDA."""
    N, k = indices.shape
    crow = torch.arange(0, N * k + 1, k, device=indices.device)

    def csr_mm() -> Tensor:
        G = torch.sparse_csr_tensor(crow, indices.reshape(-1), w.reshape(-1), (N, len(table)))
        return G @ table

    return {
        "gather/embedding_bag": lambda: F.embedding_bag(
            indices, table, per_sample_weights=w, mode="sum"
        ),
        "gather/csr_mm": csr_mm,
        "gather/gather_bmm": lambda: torch.bmm(w[:, None, :], table[indices]).squeeze(1),
    }


def rowdot_alternatives(dense: Tensor, table: Tensor, indices: Tensor) -> dict[str, Callable]:
    """Ways to compute <dense[i], table[indices[i, j]]>; `sampled_addmm` is saelab's."""
    N, k = indices.shape

    def gather_bmm(rows: int) -> Tensor:
        out = dense.new_empty(N, k)
        for s in range(0, N, rows):  # [rows, k, d] temporary per chunk
            rows_ = table[indices[s : s + rows]]
            out[s : s + rows] = torch.bmm(rows_, dense[s : s + rows, :, None]).squeeze(-1)
        return out

    return {
        "rowdot/sampled_addmm": lambda: sampled_rowdot(dense, table, indices),
        "rowdot/gather_bmm": lambda: gather_bmm(N),
        "rowdot/gather_bmm_chunk256": lambda: gather_bmm(256),
    }


def print_profile(step: Callable[[], None], device: str) -> None:
    """Where the sparse step's time goes, per op (device time on CUDA, else CPU time)."""
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60))


def checked(alternatives: dict[str, Callable[[], Tensor]]) -> dict[str, Callable[[], Tensor]]:
    """Keep the alternatives that run; print their difference from the first one's result."""
    ref = None
    kept = {}
    for name, fn in alternatives.items():
        try:
            out = fn().double()
        except (RuntimeError, NotImplementedError) as e:  # no kernel for this dtype or device
            print(f"skipping {name}: {str(e).splitlines()[0][:100]}")
            continue
        ref = out if ref is None else ref
        err = ((out - ref).norm() / ref.norm()).item()
        print(f"{name:28s} relative difference from the first: {err:.1e}")
        kept[name] = fn
    return kept


def main() -> None:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    dev, dtype = args.device, getattr(torch, args.dtype)
    N, d, n, k = args.tokens, args.d_model, args.latents, args.k

    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, device=dev) * scale).to(dtype)

    x = randn(N, d)
    params = [randn(d), randn(n, d, scale=d**-0.5), randn(n, scale=0.1), randn(n, d, scale=0.1)]
    params = [p.requires_grad_() for p in params]
    W_enc = params[1].detach()
    fns = {**sae_steps(x, params, k), "matmul": lambda: torch.mm(x, W_enc.t())}
    if args.strategies:
        with torch.no_grad():
            b_enc = params[2].detach()
            indices, values = topk_at(x, W_enc, b_enc, torch.addmm(b_enc, x, W_enc.t()), k)
        fns |= checked(gtx_alternatives(indices, values, x, n))
        fns |= checked(rowdot_alternatives(x, W_enc, indices))
        fns |= checked(gather_alternatives(indices, values, W_enc))
    t = median_times(fns, args.repeats, args.warmup, dev)
    if args.profile:
        print_profile(fns["sparse"], dev)

    step_flops = 2 * N * d * n + (2 * 2 + 3 * 2) * N * k * d
    matmul_flops_per_s = 2 * N * d * n / t["matmul"]
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "shape": {"tokens": N, "d_model": d, "latents": n, "k": k},
        "repeats": args.repeats,
        "seconds": t,
        "tokens_per_s_sparse": N / t["sparse"],
        "tokens_per_s_dense": N / t["dense"],
        "speedup_sparse_over_dense": t["dense"] / t["sparse"],
        "matmul_flops_per_s": matmul_flops_per_s,
        "sparse_step_flops_per_s": step_flops / t["sparse"],
        "fraction_of_matmul": step_flops / t["sparse"] / matmul_flops_per_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{result['device']} {args.dtype} N={N} d={d} n={n} k={k}, median of {args.repeats}")
    print(f"{'what':28s} {'ms':>10s} {'tokens/s':>12s}")
    for name, seconds in t.items():
        tokens_per_s = f"{N / seconds:12.0f}" if name in ("sparse", "dense") else ""
        print(f"{name:28s} {seconds * 1e3:10.2f} {tokens_per_s}")
    print(
        f"sparse/dense speedup {result['speedup_sparse_over_dense']:.2f}x; matmul "
        f"{matmul_flops_per_s / 1e12:.3f} TFLOP/s; sparse step at "
        f"{result['fraction_of_matmul']:.2f} of it; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
