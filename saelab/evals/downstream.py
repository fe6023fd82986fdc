"""What the model loses when the SAE's reconstruction replaces the activations."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from saelab.evals.base import (
    ABLATED_LOG_PROBS,
    LOG_PROBS,
    SPLICED_LOG_PROBS,
    EvalBatch,
    EvalPlugin,
    RunContext,
)


class Downstream(EvalPlugin):
    """Next-token cross-entropy clean / SAE-spliced / zero-ablated, CE recovered and KL.

    Counted at the predictions made from evaluated positions (the last position has no
    target); the SAE is spliced and the zeros ablated at the evaluated positions only.
    """

    needs = frozenset({LOG_PROBS, SPLICED_LOG_PROBS, ABLATED_LOG_PROBS})
    definitions: ClassVar[dict[str, str]] = {
        "downstream/ce_ablated": "zeros at the evaluated positions only (SAELens: every "
        "position, BOS included)",
        "downstream/kl": "mean over predictions from evaluated positions with a next token: "
        "the last position is left out (SAELens averages it in)",
        "downstream/positions": "every position but the first of each context, end-of-text "
        "tokens inside a context included (SAELens masks special tokens)",
    }

    def context_layout(self, run: RunContext) -> dict[str, int]:
        return dict.fromkeys(("n", "ce_clean", "ce_sae", "ce_ablated", "kl"), 1)

    def setup(self, run: RunContext) -> None:
        self.add_context_sums(run)

    def update(self, batch: EvalBatch) -> None:
        where = batch.mask[:, :-1]
        targets = batch.tokens[:, 1:, None]
        # Work on the [B, T-1, vocab] views and select positions last: no copies of the vocab axis.
        runs = {
            "ce_clean": batch.log_probs[:, :-1],
            "ce_sae": batch.spliced_log_probs[:, :-1],
            "ce_ablated": batch.ablated_log_probs[:, :-1],
        }
        sums = {"n": where.sum(1)}
        for name, log_probs in runs.items():
            ce = -log_probs.gather(-1, targets).squeeze(-1)
            sums[name] = torch.where(where, ce.double(), 0).sum(1)
        # KL(clean || spliced) = sum_v p_v log p_v - sum_v p_v log q_v: the first term and p
        # are shared by every SAE of the batch, so each SAE reads its log q once
        probs, neg_entropy = batch.clean_probs()
        kl = neg_entropy[:, :-1] - torch.linalg.vecdot(probs[:, :-1], runs["ce_sae"])
        sums["kl"] = torch.where(where, kl.double(), 0).sum(1)
        self.add_to_contexts(batch, **sums)

    def compute(self) -> dict[str, float]:
        def formulas(t: dict[str, Tensor]) -> dict[str, Tensor]:
            clean, sae, ablated = (t[k] / t["n"] for k in ("ce_clean", "ce_sae", "ce_ablated"))
            return {
                "downstream/ce_clean": clean,
                "downstream/ce_sae": sae,
                "downstream/ce_ablated": ablated,
                "downstream/delta_ce": sae - clean,
                "downstream/ce_loss_recovered": (ablated - sae) / (ablated - clean),
                "downstream/kl": t["kl"] / t["n"],
            }

        return self.context_estimates(formulas)
