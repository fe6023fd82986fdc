"""Latents matched across two SAEs by their decoder directions.

For each latent of A, the latent of B whose decoder row has the highest cosine similarity
(OpenAI's and Anthropic's way of following features across SAEs of different sizes), and how
many of B's latents lie above a threshold: a latent of A that several of B match is one that
split (a 32k latent into several 128k ones). The products are taken a chunk of A's latents at a
time, so memory stays within `chunk x n_latents(B)` floats on the device whatever the sizes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saelab.formats.base import Checkpoint
from saelab.sae.autoencoder import Autoencoder

THRESHOLDS = (0.7, 0.9)
CHUNK_BYTES = 1 << 28  # one chunk's similarity block: 256 MiB of float32


@dataclass
class Match:
    """`best[i]`: B's latent closest to A's latent i, at cosine `cosine[i]`; `above[i]`: how many
    of B's latents exceed `split_threshold` for it."""

    best: Tensor
    cosine: Tensor
    above: Tensor
    split_threshold: float

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        n = len(self.best)
        out: dict[str, float | int | dict[str, int]] = {
            f"matched_above_{t}": float((self.cosine > t).double().mean()) for t in THRESHOLDS
        }
        counts = torch.bincount(self.above.clamp(max=5), minlength=6).tolist()
        matched = torch.unique(self.best[self.cosine > self.split_threshold])
        out.update({
            "mean_cosine": float(self.cosine.double().mean()),
            "split_threshold": self.split_threshold,
            "split_fraction": float((self.above >= 2).double().mean()),
            "b_latents_matched": int(matched.numel()),
            "matches_per_latent": {("5+" if i == 5 else str(i)): c for i, c in enumerate(counts)},
            "n_latents_a": n,
        })  # fmt: skip
        return out


def directions(sae: Autoencoder) -> Tensor:
    """Unit decoder rows [n_latents, d] (a zero row stays zero: cosine 0 with everything)."""
    rows = sae.W_dec.detach().float()
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def match(
    a: Autoencoder,
    b: Autoencoder,
    split_threshold: float = 0.7,
    device: str | torch.device = "cpu",
    chunk: int | None = None,
) -> Match:
    """Each latent of `a` against every latent of `b`, `chunk` latents of `a` at a time."""
    if a.n_inputs != b.n_inputs:
        raise ValueError(f"the SAEs read {a.n_inputs}- and {b.n_inputs}-wide inputs")
    da, db = directions(a).to(device), directions(b).to(device)
    chunk = chunk or max(1, CHUNK_BYTES // (4 * len(db)))
    best, cosine, above = [], [], []
    for start in range(0, len(da), chunk):
        sims = da[start : start + chunk] @ db.T
        value, index = sims.max(-1)
        best.append(index.cpu()), cosine.append(value.cpu())
        above.append((sims > split_threshold).sum(-1).cpu())
    return Match(torch.cat(best), torch.cat(cosine), torch.cat(above), split_threshold)


@torch.no_grad()
def correlations(a: Autoencoder, b: Autoencoder, best: Tensor, inputs: Iterable[Tensor]) -> Tensor:
    """Over the tokens of `inputs` (batches [tokens, d] of the place's activations), the Pearson
    correlation of each latent of `a` with its match `best[i]` in `b`: whether the two fire on
    the same tokens, which similar decoder directions alone do not say. NaN where either latent
    is constant there (silent throughout). Sums in float64, a batch at a time."""
    sums, n = None, 0
    for x in inputs:
        za = a.encode(x.float())[0].double()
        zb = b.encode(x.float())[0][:, best.to(x.device)].double()
        part = torch.stack([za.sum(0), zb.sum(0), za.pow(2).sum(0), zb.pow(2).sum(0),
                            (za * zb).sum(0)])  # fmt: skip
        sums, n = (part if sums is None else sums + part), n + len(x)
    if sums is None:
        return torch.full((len(best),), math.nan)
    sa, sb, saa, sbb, sab = sums.cpu()
    var = (saa - sa * sa / n) * (sbb - sb * sb / n)
    out = (sab - sa * sb / n) / var.clamp_min(1e-300).sqrt()
    return torch.where(var > 0, out, torch.full_like(out, math.nan)).float()


def about(checkpoint: Checkpoint, **more: Any) -> dict[str, Any]:
    """One side of a match record: where the SAE came from and its weights' hash (what a viewer
    finds its export by), its width, and `more` (a sweep adds its run folder)."""
    return {
        "source": checkpoint.source,
        "sha256": checkpoint.sha256,
        "n_latents": checkpoint.sae.n_latents,
        **more,
    }


def record(
    found: Match,
    a: dict[str, Any],
    b: dict[str, Any],
    correlation: Tensor | None = None,
    n_tokens: int = 0,
) -> dict[str, Any]:
    """The JSON of a match (`saelab match --out`, a sweep's `matches/` files): both sides (see
    `about`), the summary, and per latent of A its best latent of B, that cosine and how many
    of B's latents lie above the split threshold; with `correlation` (see `correlations`, on
    `n_tokens` tokens) also each latent's activation correlation with its match (null where
    undefined) and their mean over the latents where it is defined."""
    out = {
        "a": a,
        "b": b,
        **found.summary(),
        "best": found.best.tolist(),
        "cosine": [round(v, 6) for v in found.cosine.tolist()],
        "matches_above_threshold": found.above.tolist(),
    }
    if correlation is not None:
        defined = correlation[~correlation.isnan()]
        out.update({
            "correlation_tokens": n_tokens,
            "mean_correlation": float(defined.double().mean()) if len(defined) else None,
            "correlation": [None if math.isnan(v) else round(v, 6) for v in correlation.tolist()],
        })  # fmt: skip
    return out


@dataclass(frozen=True)
class Candidate:
    """An SAE of a sweep as `pairs` sees it: its run folder, place, family, width and L0."""

    name: str
    place: str
    family: str
    n_latents: int
    l0: float


def pairs(saes: Sequence[Candidate]) -> list[tuple[Candidate, Candidate, str]]:
    """Which SAEs of a sweep to match, as (A, B, why). At each place: each SAE with its
    neighbours in its family's L0 order ("family neighbours": how a family's latents change as
    L0 grows, where they split), and each SAE with the SAE of every other family nearest to it
    in log L0 ("matched L0": how recipes differ at one sparsity). Each pair once.

    Every pair at a place would grow as the square of its SAEs (153 for `tiny_frontier`'s 18,
    each a product of two decoders) and adds mostly pairs that mix two differences at once (a
    TopK SAE at L0 8 against a ReLU one at L0 32); these pairs grow with the SAEs times the
    families (57 there). A is the SAE with fewer latents (its latents may split into B's), at
    equal widths the one with the lower L0, so each family's chain reads from sparse to dense."""

    def ordered(x: Candidate, y: Candidate) -> tuple[Candidate, Candidate]:
        return (x, y) if (x.n_latents, x.l0, x.name) <= (y.n_latents, y.l0, y.name) else (y, x)

    def log_l0(c: Candidate) -> float:
        return math.log(max(c.l0, 1e-6))  # a dead SAE (L0 0) is the sparsest, not an error

    chosen: dict[tuple[str, str], tuple[Candidate, Candidate, str]] = {}

    def add(x: Candidate, y: Candidate, why: str) -> None:
        a, b = ordered(x, y)
        chosen.setdefault((a.name, b.name), (a, b, why))

    places: dict[str, dict[str, list[Candidate]]] = {}
    for sae in saes:
        places.setdefault(sae.place, {}).setdefault(sae.family, []).append(sae)
    for families in places.values():
        for members in families.values():
            members.sort(key=lambda c: (c.l0, c.name))
            for x, y in itertools.pairwise(members):
                add(x, y, "family neighbours")
        for family, members in families.items():
            for other, theirs in families.items():
                if other == family:
                    continue
                for x in members:
                    nearest = min(theirs, key=lambda c: (abs(log_l0(c) - log_l0(x)), c.l0, c.name))
                    add(x, nearest, "matched L0")
    return list(chosen.values())
