"""Per-example ablation effects (`export.ablation=true`): how the model's next-token predictions
change when the latent is removed at the example's selected token.

A second, small pass over the top examples only (the main pass cannot know which events will
be kept): the clean forward of each context that holds one, once, then per example a forward
from the hooked block on with the latent's share of the reconstruction, `a * W_dec[latent]`
(times the input's scale for SAEs that normalise it), subtracted at the selected position; the
SAE's error term stays. Both forwards are the evaluator's own (`BatchEvaluator`), so hooks
behave as in eval. Cost: one forward of the later blocks per top example, i.e. about
n_latents * n_top * n_ctx tokens; hence off by default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saelab.evals.base import LOG_PROBS, SPLICED_LOG_PROBS, RunContext
from saelab.evals.evaluator import BatchEvaluator, Probe

FIELDS = ("latent", "ctx", "pos", "act")


@torch.no_grad()
def ablation_effects(
    run: RunContext, examples: dict[str, Tensor], offsets: Tensor
) -> tuple[Tensor, Tensor]:
    """(loss_diff, kl), each [E, len(offsets)], for the examples (`latent`, `ctx`, `pos`, `act`,
    each [E]) at the window positions `pos + offsets` of the run's contexts `ctx`, read in
    batches of the run's batch size.

    At window token q: `loss_diff` = ablated minus clean cross-entropy of token q given the
    tokens before it, and `kl` = KL(clean || ablated) of that prediction (both 0 where q is
    outside the context or not after the selected token, whose predictions cannot change).
    """
    # what the ablation reads: clean log-probabilities, and forwards with the hook replaced
    probe = Probe(run, {}, wants=frozenset({LOG_PROBS, SPLICED_LOG_PROBS}))
    evaluator = BatchEvaluator(run.model, [probe])
    sae, hook, device = run.sae, run.hook, run.device
    contexts, batch_size = run.data.tokens, run.data.batch_size
    offsets = offsets.to(device)
    loss_diff = torch.zeros(len(examples["ctx"]), len(offsets))
    kl = torch.zeros(len(examples["ctx"]), len(offsets))
    for group, ctx_ids in context_groups(examples["ctx"], batch_size):
        # the clean forward once per context (examples of many latents share one)
        acts_all, clean_all = evaluator.clean_forward(contexts[ctx_ids].to(device))
        ctx_ids, n_ctx = ctx_ids.to(device), contexts.shape[1]
        # by position: a chunk's forwards stop after its last window (the model is causal)
        group = group[torch.argsort(examples["pos"][group], stable=True)]
        for chunk in group.split(batch_size):
            latent, ctx, pos, act = (examples[k][chunk].to(device) for k in FIELDS)
            end = min(n_ctx, int(examples["pos"][chunk].max()) + int(offsets.max()) + 1)
            inverse = torch.searchsorted(ctx_ids, ctx)
            acts = {name: value[inverse, :end] for name, value in acts_all.items()}
            tokens = contexts[ctx.cpu(), :end].to(device)
            rows = torch.arange(len(tokens), device=device)
            x = acts[hook][rows, pos].float()
            _, info = sae.preprocess(x)
            share = act[:, None] * sae.W_dec[latent]
            share = sae.postprocess(share, info) - sae.postprocess(torch.zeros_like(share), info)
            ablated = evaluator.replaced(probe, acts, rows * end + pos, x - share)
            q = pos[:, None] + offsets  # [E, W]: the predicted tokens' positions
            inside = (q > pos[:, None]) & (q < n_ctx)  # earlier predictions cannot change
            q = q.clamp(1, end - 1)
            clean_lp = clean_all[inverse[:, None], q - 1]
            ablated_lp = ablated[rows[:, None], q - 1]
            target = tokens[rows[:, None], q][..., None]
            diff = (clean_lp.gather(-1, target) - ablated_lp.gather(-1, target)).squeeze(-1)
            loss_diff[chunk] = torch.where(inside, diff, 0).cpu()
            divergence = (clean_lp.exp() * (clean_lp - ablated_lp)).sum(-1)
            kl[chunk] = torch.where(inside, divergence, 0).cpu()
    return loss_diff, kl


def context_groups(ctx: Tensor, n_contexts: int) -> list[tuple[Tensor, Tensor]]:
    """The examples (indices into `ctx`) in groups that together hold at most `n_contexts`
    distinct contexts, with those contexts' ids (sorted)."""
    order = torch.argsort(ctx, stable=True)
    ids, counts = ctx[order].unique_consecutive(return_counts=True)
    ends = counts.cumsum(0)
    groups, start = [], 0
    for first in range(0, len(ids), n_contexts):
        last = min(first + n_contexts, len(ids))
        end = int(ends[last - 1])
        groups.append((order[start:end], ids[first:last]))
        start = end
    return groups
