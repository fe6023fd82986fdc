"""Latents matched across two SAEs by their decoder directions.

For each latent of A, the latent of B whose decoder row has the highest cosine similarity
(OpenAI's and Anthropic's way of following features across SAEs of different sizes), and how
many of B's latents lie above a threshold: a latent of A that several of B match is one that
split (a 32k latent into several 128k ones). The products are taken a chunk of A's latents at a
time, so memory stays within `chunk x n_latents(B)` floats on the device whatever the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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
