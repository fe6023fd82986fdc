"""How well the SAE reconstructs the activations, and how sparse its latents are."""

from __future__ import annotations

import torch
from torch import Tensor

from saelab.evals.base import EvalBatch, EvalPlugin, RunContext


def token_nmse(x_hat: Tensor, x: Tensor) -> Tensor:
    """OpenAI's normalised MSE of each token, |x_hat - x|^2 / |x|^2 -> [N]: the metric, and
    the ReLU recipe's loss term."""
    return (x_hat - x).pow(2).sum(-1) / x.pow(2).sum(-1).clamp_min(1e-12)


class Reconstruction(EvalPlugin):
    """nmse (OpenAI's per-token ratio), fvu and explained variance, cosine, l2 ratio, L0, L1,
    each with its standard error over contexts.

    fvu's denominator is the squared deviation from the per-dimension mean over all evaluated
    tokens (not from zero): sum |x|^2 - |sum x|^2 / n, from per-dimension sums totalled in
    float64. Its per-context share depends on that mean, known only at the end, so the
    per-dimension sums are kept per context and fvu's standard error is exact, on any number of
    ranks. Each context's row is float32 (a sum over its tokens; fvu and its SE move by about
    2^-24 x 2 |mean|^2 / variance / sqrt(contexts), 3e-11 and 4e-10 on the tiny model): with its
    index and 8 float64 sums, 8 + 64 + 4 x width bytes per context, 51.5 MB per SAE for 2^20
    GPT-2 tokens in 64-token contexts at width 768 (203 MB at mlp_post_act's 3072), which
    `saelab sweep` counts against `sweep.memory_budget`. The sums depend on the hook alone, but
    each SAE keeps its own: a state belongs to one plugin (synchronised, reset and merged per
    metric under DDP), and OpenAI's families have one SAE per hook.
    """

    SUMS = ("n", "nmse", "cosine", "l2_ratio", "sq_err", "sq_norm", "l0", "l1")

    def context_layout(self, run: RunContext) -> dict[str, int]:
        return {**dict.fromkeys(self.SUMS, 1), "dim_sum": run.sae.n_inputs}

    def setup(self, run: RunContext) -> None:
        self.add_context_sums(run)

    def update(self, batch: EvalBatch) -> None:
        x, x_hat = batch.acts.double(), batch.recons.double()
        per_token = {
            "n": torch.ones(len(x), dtype=x.dtype, device=x.device),
            "nmse": token_nmse(x_hat, x),
            "cosine": torch.nn.functional.cosine_similarity(x_hat, x, dim=-1),
            "l2_ratio": x_hat.norm(dim=-1) / x.norm(dim=-1),
            "sq_err": (x_hat - x).pow(2).sum(-1),
            "sq_norm": x.pow(2).sum(-1),
            "l0": batch.l0(),
            "l1": batch.l1(),
        }
        sums = {k: batch.by_context(v) for k, v in per_token.items()}
        self.add_to_contexts(batch, **sums, dim_sum=batch.by_context(x))

    def compute(self) -> dict[str, float]:
        def formulas(t: dict[str, Tensor]) -> dict[str, Tensor]:
            # sum over dims of sum_t (x - mean)^2 = sum |x|^2 - |sum x|^2 / n
            total_var = t["sq_norm"] - t["dim_sum"].pow(2).sum() / t["n"]
            fvu = t["sq_err"] / total_var
            return {
                "reconstruction/nmse": t["nmse"] / t["n"],
                "reconstruction/fvu": fvu,
                "reconstruction/explained_variance": 1 - fvu,
                "reconstruction/cosine": t["cosine"] / t["n"],
                "reconstruction/l2_ratio": t["l2_ratio"] / t["n"],
                "sparsity/l0": t["l0"] / t["n"],
                "sparsity/l1": t["l1"] / t["n"],
            }

        return self.context_estimates(formulas)
