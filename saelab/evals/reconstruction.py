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
    tokens (not from zero); it is accumulated from per-dimension sums in float64. Its share per
    context, needed for the SE, would need that mean before the first batch (or every
    context's per-dimension sums kept, contexts x width): each context's squared deviation is
    taken from the mean of the tokens this rank saw before it (of its own batch for the first)
    instead. That changes the SE only at second order (the sum of squares is stationary at the
    mean): under 1% from the delta method with the true mean in tests/test_stderr.py, 3% between
    one and two DDP ranks on 33 contexts (tests/test_ddp.py); never the value.
    """

    SUMS = ("n", "nmse", "cosine", "l2_ratio", "sq_err", "sq_norm", "sq_dev", "l0", "l1")

    def setup(self, run: RunContext) -> None:
        self.add_context_sums(*self.SUMS)
        self.add_sum_state("dim_sum", (run.sae.n_inputs,))
        self.add_sum_state("tokens")  # dim_sum's count: the centre, where this rank has been

    def update(self, batch: EvalBatch) -> None:
        x, x_hat = batch.acts.double(), batch.recons.double()
        centre = torch.where(self.tokens > 0, self.dim_sum / self.tokens.clamp(min=1), x.mean(0))
        per_token = {
            "n": torch.ones(len(x), dtype=x.dtype, device=x.device),
            "nmse": token_nmse(x_hat, x),
            "cosine": torch.nn.functional.cosine_similarity(x_hat, x, dim=-1),
            "l2_ratio": x_hat.norm(dim=-1) / x.norm(dim=-1),
            "sq_err": (x_hat - x).pow(2).sum(-1),
            "sq_norm": x.pow(2).sum(-1),
            "sq_dev": (x - centre).pow(2).sum(-1),
            "l0": batch.l0(),
            "l1": batch.l1(),
        }
        self.add_to_contexts(batch, **{k: batch.by_context(v) for k, v in per_token.items()})
        self.dim_sum += x.sum(0)
        self.tokens += len(x)

    def compute(self) -> dict[str, float]:
        def formulas(t: dict[str, Tensor]) -> dict[str, Tensor]:
            # sum over dims of sum_t (x - mean)^2 = sum |x|^2 - |sum x|^2 / n: the value; its
            # influence per context is that of the deviations from the centre
            total_var = t["sq_norm"] - self.dim_sum.pow(2).sum() / t["n"]
            total_var = total_var.detach() + t["sq_dev"] - t["sq_dev"].detach()
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
