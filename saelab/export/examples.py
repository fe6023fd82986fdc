"""Per-latent example sets kept in one streaming pass, in memory independent of the token count.

An `ExampleSet` holds, for every latent, the `m` events with the highest score seen so far,
with their token windows and the latent's activations over each window (taken from the batch
when an event is selected, so no second pass over the data is needed). Scoring by activation
gives the top examples; scoring by minus a uniform random key gives a bottom-k sketch, i.e. a
uniform sample without replacement of all positive events (the reservoir).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saelab.autoencoder import SparseLatents
from saelab.evals.base import EvalBatch


@dataclass
class Events:
    """The positive latent activations of one batch, [E] each, and where they are."""

    latent: Tensor
    act: Tensor
    row: Tensor  # index into the batch's evaluated (masked) positions

    @classmethod
    def of(cls, batch: EvalBatch) -> Events:
        latents = batch.latents
        if isinstance(latents, SparseLatents):
            fired = latents.values > 0
            rows = torch.arange(len(latents.values), device=fired.device)[:, None]
            return cls(latents.indices[fired], latents.values[fired], rows.expand_as(fired)[fired])
        rows, ids = (latents > 0).nonzero(as_tuple=True)
        return cls(ids, latents[rows, ids], rows)


class Windows:
    """Looks up token windows, and one latent's activations over them, in one batch."""

    def __init__(self, batch: EvalBatch, left: int, right: int) -> None:
        self.batch = batch
        self.where = batch.mask.nonzero()  # [N, 2]: (context row, position) of each event row
        self.row_of = torch.full(batch.mask.shape, -1, dtype=torch.long, device=batch.mask.device)
        self.row_of[batch.mask] = torch.arange(len(self.where), device=batch.mask.device)
        self.offsets = torch.arange(-left, right + 1, device=batch.mask.device)

    def __call__(self, latent: Tensor, row: Tensor) -> dict[str, Tensor]:
        """Fields of the events (`latent`, `row`): ctx, doc, pos, tokens [E, W], acts [E, W]."""
        b, t = self.where[row].unbind(-1)
        tokens_bt = self.batch.tokens
        n_ctx = tokens_bt.shape[1]
        tw = t[:, None] + self.offsets  # [E, W]
        inside = (tw >= 0) & (tw < n_ctx)
        tw = tw.clamp(0, n_ctx - 1)
        tokens = torch.where(inside, tokens_bt[b[:, None], tw], -1)
        rows = torch.where(inside, self.row_of[b[:, None], tw], -1)
        acts = self._acts(latent, rows)
        context = self.batch.context
        document = self.batch.document
        return {
            "ctx": b if context is None else context.to(b.device)[b],
            "doc": b if document is None else document.to(b.device)[b, t],
            "pos": t,
            "tokens": tokens.int(),
            "acts": acts.half(),
        }

    def _acts(self, latent: Tensor, rows: Tensor) -> Tensor:
        """Activation of `latent[e]` at each evaluated row `rows[e, w]` (0 where rows is -1)."""
        latents = self.batch.latents
        safe = rows.clamp(min=0)
        if isinstance(latents, SparseLatents):
            hit = latents.indices[safe] == latent[:, None, None]  # [E, W, k]
            acts = (latents.values[safe] * hit).sum(-1)
        else:
            acts = latents[safe, latent[:, None]]
        return torch.where(rows >= 0, acts, 0).clamp(min=0)


class ExampleSet(nn.Module):
    """The `m` highest-scoring events of each of `n` latents, with their windows."""

    def __init__(self, n: int, m: int, width: int) -> None:
        super().__init__()
        self.m = m
        self.register_buffer("score", torch.full((n, m), -torch.inf))
        self.register_buffer("act", torch.zeros(n, m))
        self.register_buffer("ctx", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("doc", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("pos", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("tokens", torch.full((n, m, width), -1, dtype=torch.int32))
        self.register_buffer("acts", torch.zeros(n, m, width, dtype=torch.float16))

    FIELDS = ("act", "ctx", "doc", "pos", "tokens", "acts")

    def merge(self, events: Events, score: Tensor, windows: Windows) -> None:
        """Keep each latent's `m` best of (kept, this batch's events): one `topk` over
        [n, m kept + m candidates], after cutting every latent's candidates to its best `m`."""
        n, m = self.score.shape
        if len(score) == 0:
            return
        by_score = torch.argsort(score, descending=True)
        order = by_score[torch.argsort(events.latent[by_score], stable=True)]
        latent = events.latent[order]
        counts = torch.bincount(latent, minlength=n)
        rank = torch.arange(len(order), device=order.device) - (counts.cumsum(0) - counts)[latent]
        keep = rank < m
        cand_score = torch.full_like(self.score, -torch.inf)
        cand_event = torch.full((n, m), -1, dtype=torch.long, device=order.device)
        cand_score[latent[keep], rank[keep]] = score[order[keep]]
        cand_event[latent[keep], rank[keep]] = order[keep]
        best = torch.topk(torch.cat([self.score, cand_score], 1), m, dim=1, sorted=True)
        new = (best.indices >= m) & (best.values > -torch.inf)
        changed = new.any(1).nonzero().squeeze(1)
        if len(changed) == 0:
            return
        slots = best.indices[changed]
        old = slots.clamp(max=m - 1)
        for name in self.FIELDS:
            field = getattr(self, name)[changed]
            index = old.view(*old.shape, *([1] * (field.dim() - 2))).expand_as(field)
            getattr(self, name)[changed] = field.gather(1, index)
        self.score[changed] = best.values[changed]
        is_new = new[changed]
        event = cand_event[changed].gather(1, (slots - m).clamp(min=0))[is_new]
        fields = windows(events.latent[event], events.row[event])
        fields["act"] = events.act[event]
        rows, cols = is_new.nonzero(as_tuple=True)
        for name in self.FIELDS:
            getattr(self, name)[changed[rows], cols] = fields[name].to(getattr(self, name).dtype)
