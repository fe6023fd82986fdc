"""Training recipes: how an SAE is initialised and what loss it minimises.

`TopK` follows OpenAI's published method (their train.py): tied init then unit-norm decoder
rows, `pre_bias` at the geometric median of a sample, encoder rescaled so reconstructions
start at the input's scale, MSE scaled by the inverse activation variance, and an AuxK loss
in which the top `k_aux` dead latents reconstruct the residual error. `ReluL1` is the v1/v4
recipe: ReLU latents with an L1 penalty normalised by the input norm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from saelab.errors import UserError
from saelab.evals.reconstruction import token_nmse
from saelab.sae.autoencoder import Autoencoder
from saelab.sae.kernels import sparse_decode, topk_at


@dataclass
class StepOutput:
    """The loss to minimise, which latents fired (for dead-latent statistics), and logs."""

    loss: Tensor
    fired_counts: Tensor  # [n_latents]: on how many of this batch's tokens each latent fired
    logs: dict[str, Tensor]


def record_firing(sae: Autoencoder, fired_counts: Tensor, n_tokens: int | Tensor) -> None:
    """Tokens since each latent last fired: `n_tokens` more, 0 for those that fired. No host
    sync (`torch.where`, not boolean indexing)."""
    with torch.no_grad():
        stats = sae.stats_last_nonzero
        stats.copy_(torch.where(fired_counts > 0, 0, stats + n_tokens))


# how a recipe reports this batch's firing counts before it reads the dead-latent mask
Record = Callable[[Autoencoder, Tensor, int], None]


def fired_counts(indices: Tensor, values: Tensor, n_latents: int) -> Tensor:
    """[n_latents] counts of non-zero `values` per latent id in `indices` (both [N, k])."""
    counts = torch.zeros(n_latents, dtype=torch.long, device=indices.device)
    return counts.index_add_(0, indices.reshape(-1), (values > 0).reshape(-1).long())


def geometric_median(points: Tensor, iterations: int = 64, eps: float = 1e-8) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=-1).clamp_min(eps)
        median = (weights[:, None] * points).sum(0) / weights.sum()
    return median


def normalized_mse(recons: Tensor, target: Tensor) -> Tensor:
    """MSE divided by the MSE of predicting the batch mean: scale-free."""
    baseline = (target - target.mean(0)).pow(2).mean()
    return (recons - target).pow(2).mean() / baseline.clamp_min(1e-12)


@torch.no_grad()
def reconstruction_logs(recons: Tensor, x: Tensor, mse: Tensor) -> dict[str, Tensor]:
    """mse, OpenAI's per-token nmse and fvu (around the batch mean) of a training batch."""
    err = (recons - x).pow(2)
    return {
        "mse": mse,
        "nmse": token_nmse(recons, x).mean(),
        "fvu": err.sum() / (x - x.mean(0)).pow(2).sum(),
    }


class Recipe:
    """Base: decoder rows are kept unit-norm, with the gradient parallel to them removed."""

    name = "recipe"
    normalize = False
    k: int | None = None

    def __init__(self, n_latents: int, pre_bias_init: str = "geometric_median") -> None:
        self.n_latents = n_latents
        if pre_bias_init not in ("geometric_median", "mean", "zero"):
            raise UserError(
                f"recipe.pre_bias_init must be geometric_median, mean or zero: {pre_bias_init}"
            )
        self.pre_bias_init = pre_bias_init

    def build(self, n_inputs: int, sample: Tensor, seed: int) -> tuple[Autoencoder, float]:
        """A freshly initialised SAE fitted to `sample` (raw activations [N, n_inputs]), and the
        MSE scale (inverse variance of its inputs) that its loss uses."""
        sae = Autoencoder.random(
            self.n_latents, n_inputs, k=self.k, seed=seed, normalize=self.normalize
        )
        sae = sae.to(sample.device)
        x, _ = sae.preprocess(sample.float())
        with torch.no_grad():
            if self.pre_bias_init == "geometric_median":
                sae.pre_bias.copy_(geometric_median(x))
            elif self.pre_bias_init == "mean":
                sae.pre_bias.copy_(x.mean(0))
            # scale the encoder so that initial reconstructions have the input's norm
            centred = x - sae.pre_bias
            _, latents, _ = sae(sample.float())
            recons = latents @ sae.W_dec
            scale = centred.norm(dim=-1).mean() / recons.norm(dim=-1).mean().clamp_min(1e-12)
            sae.W_enc.mul_(scale)
        return sae, float(1 / (x - x.mean(0)).pow(2).mean().clamp_min(1e-12))

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        """The batch's loss; calls `record` once with the batch's firing counts."""
        raise NotImplementedError

    @staticmethod
    @torch.no_grad()
    def project_decoder_grad(sae: Autoencoder) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if sae.W_dec.grad is not None:
            rows = sae.W_dec
            parallel = (sae.W_dec.grad * rows).sum(-1, keepdim=True)
            sae.W_dec.grad.sub_(parallel * rows)

    @staticmethod
    @torch.no_grad()
    def normalize_decoder(sae: Autoencoder) -> None:
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


class TopK(Recipe):
    """TopK latents with AuxK on dead latents (OpenAI, "Scaling and evaluating SAEs")."""

    name = "topk"

    def __init__(
        self,
        n_latents: int = 32768,
        k: int = 32,
        k_aux: int = 256,
        auxk_coef: float = 1 / 32,
        dead_tokens: int = 10_000_000,
        normalize: bool = True,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(n_latents, pre_bias_init)
        self.k, self.k_aux, self.auxk_coef = k, k_aux, auxk_coef
        self.dead_tokens, self.normalize = dead_tokens, normalize

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        x, _ = sae.preprocess(x.float())
        centred = x - sae.pre_bias
        with torch.no_grad():  # choosing latents needs the dense pre-activations, not their grad
            pre = torch.addmm(sae.latent_bias, centred, sae.W_enc.t())
        indices, values = topk_at(centred, sae.W_enc, sae.latent_bias, pre, self.k)
        recons = sparse_decode(indices, values, sae.W_dec) + sae.pre_bias
        mse = (recons - x).pow(2).mean()
        loss = mse_scale * mse
        logs = reconstruction_logs(recons, x, mse)

        # OpenAI's order: this batch's firing updates the statistics before the dead mask is
        # read, so a latent that fires in this batch is not dead for its AuxK, and one whose
        # tokens-since-fired cross `dead_tokens` in this batch already is.
        counts = fired_counts(indices, values, sae.n_latents)
        record(sae, counts, len(x))
        if self.auxk_coef:
            dead = sae.stats_last_nonzero > self.dead_tokens
            pre.masked_fill_(~dead, float("-inf"))  # live latents: relu makes them 0, no grad
            k_aux = min(self.k_aux, sae.n_latents)
            aux_indices, aux_values = topk_at(centred, sae.W_enc, sae.latent_bias, pre, k_aux)
            # the dead latents reconstruct the residual error; pre_bias is already in `recons`
            residual = (x - recons).detach()
            aux_loss = normalized_mse(sparse_decode(aux_indices, aux_values, sae.W_dec), residual)
            loss = loss + self.auxk_coef * aux_loss
            logs["auxk_loss"] = aux_loss.detach()
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})


class ReluL1(Recipe):
    """ReLU latents with an L1 penalty on latents / input norm (OpenAI's v1/v4 recipe)."""

    name = "relu_l1"

    def __init__(
        self,
        n_latents: int = 32768,
        l1_coef: float = 0.01,
        normalize: bool = False,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(n_latents, pre_bias_init)
        self.l1_coef, self.normalize = l1_coef, normalize

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        """OpenAI's v1/v4 loss (their loss.py): per-token normalised MSE plus `l1_coef` times
        the per-token L1 over the input norm. Both terms are per token and scale-free, so
        `l1_coef` means what it means in their recipe; `mse_scale` (TopK's) is not used."""
        x, _ = sae.preprocess(x.float())
        latents = F.relu(sae.encode_pre_act(x))
        recons = latents @ sae.W_dec + sae.pre_bias
        l1 = (latents.sum(-1) / x.norm(dim=-1).clamp_min(1e-12)).mean()
        loss = token_nmse(recons, x).mean() + self.l1_coef * l1
        mse = (recons - x).pow(2).mean().detach()
        logs = {**reconstruction_logs(recons, x, mse), "l1": l1}
        counts = (latents > 0).sum(0)
        record(sae, counts, len(x))
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})
