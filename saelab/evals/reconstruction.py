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
    """nmse (OpenAI's per-token ratio), fvu and explained variance, cosine, l2 ratio, L0, L1.

    fvu's denominator is the squared deviation from the per-dimension mean over all evaluated
    tokens (not from zero); it is accumulated from per-dimension sums in float64.
    """

    def setup(self, run: RunContext) -> None:
        sae = run.sae
        for name in ("n", "nmse", "cosine", "l2_ratio", "sq_err", "sq_norm", "l0", "l1"):
            self.add_sum_state(name)
        self.add_sum_state("dim_sum", (sae.n_inputs,))

    def update(self, batch: EvalBatch) -> None:
        x, x_hat = batch.acts.double(), batch.recons.double()
        err = (x_hat - x).pow(2).sum(-1)
        norm_sq = x.pow(2).sum(-1)
        self.n += len(x)
        self.nmse += token_nmse(x_hat, x).sum()
        self.cosine += torch.nn.functional.cosine_similarity(x_hat, x, dim=-1).sum()
        self.l2_ratio += (x_hat.norm(dim=-1) / x.norm(dim=-1)).sum()
        self.sq_err += err.sum()
        self.sq_norm += norm_sq.sum()
        self.dim_sum += x.sum(0)
        self.l0 += batch.l0().sum()
        self.l1 += batch.l1().double().sum()

    def compute(self) -> dict[str, float]:
        # sum over dims of sum_t (x - mean)^2 = sum |x|^2 - |sum x|^2 / n
        total_var = self.sq_norm - self.dim_sum.pow(2).sum() / self.n
        fvu = self.sq_err / total_var
        return {
            "reconstruction/nmse": (self.nmse / self.n).item(),
            "reconstruction/fvu": fvu.item(),
            "reconstruction/explained_variance": (1 - fvu).item(),
            "reconstruction/cosine": (self.cosine / self.n).item(),
            "reconstruction/l2_ratio": (self.l2_ratio / self.n).item(),
            "sparsity/l0": (self.l0 / self.n).item(),
            "sparsity/l1": (self.l1 / self.n).item(),
        }
