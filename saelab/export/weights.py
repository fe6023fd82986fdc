"""Tables computed from the weights alone: direct logit effects and decoder neighbours."""

from __future__ import annotations

import torch
from torch import Tensor

from saelab.evals.base import RunContext

CHUNK = 1024  # latents per matmul: bounds the [chunk, vocab] and [chunk, n_latents] temporaries


def output_directions(run: RunContext, W_dec: Tensor) -> Tensor:
    """Decoder directions in the residual stream: `mlp_post_act` latents write through the
    layer's MLP output weights; every other location is already residual-stream wide."""
    if run.place.location == "mlp_post_act":
        return W_dec @ run.model.mlp_out_weight(run.place.layer).to(W_dec)
    return W_dec


@torch.no_grad()
def logit_effects(run: RunContext, W_dec: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(top ids, top values, bottom ids, bottom values), each [n_latents, n]: the direct effect
    on the logits of each latent's decoder direction, `(d * ln_final.w) @ W_U`."""
    W_U, scale = run.model.unembedding()
    W_U = W_U.float()
    scale = scale.float().to(W_U.device)
    out: list[list[Tensor]] = [[], [], [], []]
    directions = output_directions(run, W_dec.float().to(W_U.device))
    for chunk in directions.split(CHUNK):
        logits = (chunk * scale) @ W_U
        top = logits.topk(n, dim=1)
        bottom = logits.topk(n, dim=1, largest=False)
        for part, value in zip(out, (top[1], top[0], bottom[1], bottom[0]), strict=True):
            part.append(value.cpu())
    return tuple(torch.cat(part) for part in out)


@torch.no_grad()
def neighbours(W_dec: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(ids, cosines) [n_latents, n]: the other latents nearest by decoder cosine similarity."""
    unit = torch.nn.functional.normalize(W_dec.float(), dim=1)
    n = min(n, len(unit) - 1)
    ids, cosines = [], []
    for start in range(0, len(unit), CHUNK):
        sims = unit[start : start + CHUNK] @ unit.T
        rows = torch.arange(len(sims), device=sims.device)
        sims[rows, rows + start] = -torch.inf  # never its own neighbour
        top = sims.topk(n, dim=1)
        ids.append(top.indices.cpu())
        cosines.append(top.values.cpu())
    return torch.cat(ids), torch.cat(cosines)
