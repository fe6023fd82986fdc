"""Per-latent example sets kept in one streaming pass, in memory independent of the token count.

An `ExampleSet` holds, for every latent, the `m` events with the highest score seen so far,
with their token windows and the latent's activations over each window (taken from the batch
when an event is selected, so no second pass over the data is needed). Scoring by activation
gives the top examples; scoring by minus a uniform random key gives a bottom-k sketch, i.e. a
uniform sample without replacement of all positive events (the reservoir).

Every event also carries a window key, a 64-bit hash of the tokens around it: two events with
the same key show the same text (duplicated documents, boilerplate, repeated characters). A
set that deduplicates keeps only the best event of each key, so the top examples are the top
of distinct windows; the reservoir keeps its duplicates (it must stay a uniform sample) and
the writer skips them when it picks examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saelab.evals.base import EvalBatch
from saelab.sae.autoencoder import SparseLatents


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


def _signed(constant: int) -> int:
    """A 64-bit constant as torch's int64 holds it (two's complement)."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


MIX = [_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)]


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform_keys(seed: int, *ids: Tensor) -> Tensor:
    """A pseudo-random float64 in [0, 1) per event, a function of the seed and the event's
    identity (`ids`: context, position, latent) alone, so a sample kept by these keys is the
    same however the data is cut into batches or shared across DDP ranks. SplitMix64's mixer,
    in int64 arithmetic that wraps modulo 2^64."""
    h = torch.full_like(ids[0], seed, dtype=torch.long)
    for part in ids:
        h = h + MIX[0] + part.long()
        h = (h ^ _shift_right(h, 30)) * MIX[1]
        h = (h ^ _shift_right(h, 27)) * MIX[2]
        h = h ^ _shift_right(h, 31)
    return _shift_right(h, 11).double() / 2.0**53


def key_weights(width: int, device: torch.device) -> Tensor:
    """Fixed odd 64-bit multipliers of a window's token ids. The key `sum((token + 2) * w)`
    wraps modulo 2^64; two windows that differ in one token (by less than 2^63) never collide,
    and otherwise collide with probability about 2^-48 for vocabularies below 2^16."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randint(-(2**62), 2**62, (width,), generator=generator) * 2 + 1
    return weights.to(device)


class Windows:
    """Looks up token windows, and one latent's activations over them, in one batch.

    `key[row]` is the window key of each evaluated row: the hash of the tokens from `dedup`
    left of it (at most the window's left side) to the window's right end; with `dedup=None`
    it is the row's place in the data, unique, so nothing is deduplicated."""

    def __init__(self, batch: EvalBatch, left: int, right: int, dedup: int | None) -> None:
        self.batch = batch
        device = batch.mask.device
        self.where = batch.mask.nonzero()  # [N, 2]: (context row, position) of each event row
        self.row_of = torch.full(batch.mask.shape, -1, dtype=torch.long, device=device)
        self.row_of[batch.mask] = torch.arange(len(self.where), device=device)
        self.offsets = torch.arange(-left, right + 1, device=device)
        b, t = self.where.unbind(-1)
        if dedup is None:
            self.key = self._context(b) * batch.tokens.shape[1] + t
        else:
            tokens, _ = self._window(b, t, self.offsets[left - min(dedup, left) :])
            self.key = ((tokens + 2) * key_weights(tokens.shape[1], device)).sum(1)

    def place(self, row: Tensor) -> tuple[Tensor, Tensor]:
        """(context index in the data, position) of each evaluated row."""
        b, t = self.where[row].unbind(-1)
        return self._context(b), t

    def _context(self, b: Tensor) -> Tensor:
        context = self.batch.context
        return b if context is None else context.to(b.device)[b]

    def _window(self, b: Tensor, t: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids [E, W] at `t + offsets` of rows `b` (-1 outside the context), and the
        positions (clamped inside)."""
        tokens_bt = self.batch.tokens
        n_ctx = tokens_bt.shape[1]
        tw = t[:, None] + offsets
        inside = (tw >= 0) & (tw < n_ctx)
        tw = tw.clamp(0, n_ctx - 1)
        return torch.where(inside, tokens_bt[b[:, None], tw], -1), torch.where(inside, tw, -1)

    def __call__(self, latent: Tensor, row: Tensor) -> dict[str, Tensor]:
        """Fields of the events (`latent`, `row`): ctx, doc, pos, key, tokens [E, W] and
        acts [E, W]."""
        b, t = self.where[row].unbind(-1)
        tokens, tw = self._window(b, t, self.offsets)
        rows = torch.where(tw >= 0, self.row_of[b[:, None], tw.clamp(min=0)], -1)
        document = self.batch.document
        return {
            "ctx": self._context(b),
            "doc": b if document is None else document.to(b.device)[b, t],
            "pos": t,
            "key": self.key[row],
            "tokens": tokens.int(),
            "acts": self._acts(latent, rows).half(),
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


def drop_repeats(score: Tensor, key: Tensor) -> Tensor:
    """`score` [n, c] with -inf wherever a higher-scored entry of the same row has the same key."""
    by_score = score.argsort(1, descending=True)
    by_key = by_score.gather(1, key.gather(1, by_score).argsort(dim=1, stable=True))
    sorted_key = key.gather(1, by_key)
    repeat = torch.zeros_like(score, dtype=torch.bool)
    repeat[:, 1:] = sorted_key[:, 1:] == sorted_key[:, :-1]
    return score.scatter(1, by_key, torch.where(repeat, -torch.inf, score.gather(1, by_key)))


class ExampleSet(nn.Module):
    """The `m` highest-scoring events of each of `n` latents, with their windows; with
    `dedup`, the best event of each window key only."""

    def __init__(self, n: int, m: int, width: int, dedup: bool) -> None:
        super().__init__()
        self.m, self.dedup = m, dedup
        # float64: the reservoir's scores are 53-bit random keys (float32 would tie often)
        self.register_buffer("score", torch.full((n, m), -torch.inf, dtype=torch.float64))
        self.register_buffer("key", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("act", torch.zeros(n, m))
        self.register_buffer("ctx", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("doc", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("pos", torch.zeros(n, m, dtype=torch.long))
        self.register_buffer("tokens", torch.full((n, m, width), -1, dtype=torch.int32))
        self.register_buffer("acts", torch.zeros(n, m, width, dtype=torch.float16))

    FIELDS = ("act", "ctx", "doc", "pos", "key", "tokens", "acts")

    def gather_ranks(self) -> None:
        """Under DDP, every rank's kept events pooled and cut to each latent's `m` best (one
        event per key with `dedup`): what one process would have kept from all the data."""
        dist = torch.distributed
        pooled = {}
        for name in ("score", *self.FIELDS):
            mine = getattr(self, name)
            mine = mine.float() if mine.dtype == torch.float16 else mine  # gloo: no float16
            parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, mine.contiguous())
            pooled[name] = torch.cat(parts, 1)
        score = pooled["score"]
        if self.dedup:
            score = drop_repeats(score, pooled["key"])
        best = torch.topk(score, self.m, dim=1, sorted=True)
        self.score.copy_(best.values)
        for name in self.FIELDS:
            field = pooled[name]
            index = best.indices.view(*best.indices.shape, *([1] * (field.dim() - 2)))
            getattr(self, name).copy_(field.gather(1, index.expand(-1, -1, *field.shape[2:])))

    def merge(self, events: Events, score: Tensor, windows: Windows) -> None:
        """Keep each latent's `m` best of (kept, this batch's events): one `topk` over
        [n, m kept + m candidates], after cutting every latent's candidates to its best `m`
        (and, with `dedup`, dropping all but the best of each key, first within the batch,
        then across kept and candidates)."""
        n, m = self.score.shape
        if len(score) == 0:
            return
        key = windows.key[events.row]
        order = torch.argsort(score, descending=True)
        if self.dedup:  # sorted by (latent, key, score descending): the first of each group
            order = order[torch.argsort(key[order], stable=True)]
            order = order[torch.argsort(events.latent[order], stable=True)]
            latent, k = events.latent[order], key[order]
            first = torch.ones_like(latent, dtype=torch.bool)
            first[1:] = (latent[1:] != latent[:-1]) | (k[1:] != k[:-1])
            order = order[first]
            order = order[torch.argsort(score[order], descending=True)]
        order = order[torch.argsort(events.latent[order], stable=True)]
        latent = events.latent[order]
        counts = torch.bincount(latent, minlength=n)
        rank = torch.arange(len(order), device=order.device) - (counts.cumsum(0) - counts)[latent]
        keep = rank < m
        cand_score = torch.full_like(self.score, -torch.inf)
        cand_event = torch.full((n, m), -1, dtype=torch.long, device=order.device)
        cand_score[latent[keep], rank[keep]] = score[order[keep]].double()
        cand_event[latent[keep], rank[keep]] = order[keep]
        pool = torch.cat([self.score, cand_score], 1)
        if self.dedup:
            cand_key = key[cand_event.clamp(min=0)]
            pool = drop_repeats(pool, torch.cat([self.key, cand_key], 1))
        best = torch.topk(pool, m, dim=1, sorted=True)
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
