"""Training recipes: how an SAE is initialised and what loss it minimises.

`TopK` follows OpenAI's published method (their train.py): tied init then unit-norm decoder
rows, `pre_bias` at the geometric median of a sample, encoder rescaled so reconstructions
start at the input's scale, MSE scaled by the inverse activation variance, and an AuxK loss
in which the top `k_aux` dead latents reconstruct the residual error. `ReluL1` is the v1/v4
recipe: ReLU latents with an L1 penalty normalised by the input norm.

The architectures compared in recent papers share that init, the unit-norm decoder and the
variance-scaled MSE, and differ in how latents are chosen and what else is penalised:
`BatchTopK` (Bussmann et al.; saved as a JumpReLU with one shared threshold), `Matryoshka`
(BatchTopK with a loss per nested prefix of the dictionary), `MultiTopK` (OpenAI's paper,
section 5.3: L(k) + L(4k)/8) and `JumpReLU` (Rajamanoharan et al., Gemma Scope: learned
per-latent thresholds, an L0 penalty, straight-through estimators).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saelab.data.tokens import distributed_rank
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
    jumprelu = False  # the trained SAE is a JumpReLU (it has a `threshold`)

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
        sae = self.new_sae(n_inputs, seed).to(sample.device)
        x, _ = sae.preprocess(sample.float())
        with torch.no_grad():
            if self.pre_bias_init == "geometric_median":
                sae.pre_bias.copy_(geometric_median(x))
            elif self.pre_bias_init == "mean":
                sae.pre_bias.copy_(x.mean(0))
            # scale the encoder so that initial reconstructions have the input's norm
            centred = x - sae.pre_bias
            latents = self.initial_latents(sae, x)
            recons = latents @ sae.W_dec
            scale = centred.norm(dim=-1).mean() / recons.norm(dim=-1).mean().clamp_min(1e-12)
            sae.W_enc.mul_(scale)
        return sae, float(1 / (x - x.mean(0)).pow(2).mean().clamp_min(1e-12))

    def new_sae(self, n_inputs: int, seed: int) -> Autoencoder:
        """The untrained SAE (before `build` fits it to a sample)."""
        return Autoencoder.random(
            self.n_latents,
            n_inputs,
            k=self.k,
            seed=seed,
            normalize=self.normalize,
            jumprelu=self.jumprelu,
        )

    def initial_latents(self, sae: Autoencoder, x: Tensor) -> Tensor:
        """Dense latents of preprocessed inputs `x` as this recipe trains them (for the
        encoder's initial scale)."""
        return sae.activation(sae.encode_pre_act(x))

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
        loss = loss + self.auxk(sae, centred, pre, x, recons, logs)
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})

    def auxk(
        self,
        sae: Autoencoder,
        centred: Tensor,
        pre: Tensor,
        x: Tensor,
        recons: Tensor,
        logs: dict[str, Tensor],
    ) -> Tensor | float:
        """`auxk_coef` x the normalised MSE with which the top `k_aux` dead latents of each
        token reconstruct the residual error `x - recons`; 0 when off. Call it after `record`
        (the dead mask is read then). Overwrites `pre` (dense pre-activations, no grad)."""
        if not self.auxk_coef:
            return 0.0
        dead = sae.stats_last_nonzero > self.dead_tokens
        pre.masked_fill_(~dead, float("-inf"))  # live latents: relu makes them 0, no grad
        k_aux = min(self.k_aux, sae.n_latents)
        aux_indices, aux_values = topk_at(centred, sae.W_enc, sae.latent_bias, pre, k_aux)
        # the dead latents reconstruct the residual error; pre_bias is already in `recons`
        residual = (x - recons).detach()
        aux_loss = normalized_mse(sparse_decode(aux_indices, aux_values, sae.W_dec), residual)
        logs["auxk_loss"] = aux_loss.detach()
        return self.auxk_coef * aux_loss


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


# -- BatchTopK and Matryoshka BatchTopK ------------------------------------------------------
def batch_topk_mask(pre: Tensor, k: int) -> Tensor:
    """[N, n] mask of the `k x tokens` largest positive pre-activations of the whole batch.

    Under torch.distributed the batch is every rank's tokens together (ranks hold equal
    batches): each rank gathers the others' largest values to find the global cut-off, so
    two ranks choose exactly what one process does on their joint batch. The cut-off is the
    (k x tokens)-th largest value; every positive value at or above it is kept (ties at the
    cut-off all stay, on one rank as on many). No host sync.
    """
    _, world = distributed_rank()
    flat = F.relu(pre).flatten()
    keep = k * len(pre) * world
    top = flat.topk(min(keep, flat.numel())).values
    if world > 1:  # the global top `keep` lies within the union of each rank's top `keep`
        gathered = [torch.empty_like(top) for _ in range(world)]
        torch.distributed.all_gather(gathered, top)
        top = torch.cat(gathered).topk(keep).values
    return (pre > 0) & (pre >= top[-1])


class BatchTopK(TopK):
    """BatchTopK (Bussmann, Leask and Nanda, 2024): the `k x tokens` largest activations
    across the whole batch, so tokens get more or fewer than k latents.

    A batch-wide choice cannot be made for one token at inference. A shared threshold is
    estimated during training, as SAELens's `BatchTopKTrainingSAE` does: after each batch,
    `threshold <- (1 - threshold_lr) * threshold + threshold_lr * m`, where m is the smallest
    positive activation kept (over all ranks). SAELens starts it at 0; here the first batch
    sets it (m itself): from 0, a 96-step tiny-model run (k=16, threshold_lr 0.01) was saved
    with L0 82 and validation nmse 0.89 (training's 0.27); from the first batch, L0 5.1 and
    nmse 0.35. The average lags ~1/threshold_lr steps: raise threshold_lr for short runs.
    With `inference: jumprelu`
    (default) the SAE is a JumpReLU whose per-latent `threshold` holds that one value: it is
    part of the SAE's state (Lightning checkpoints, resume), is what validation runs, and is
    how the SAE is saved. With `inference: topk` the SAE is saved as TopK with this `k` (no
    threshold). AuxK as in `TopK`. The latents are dense in training (the number per token
    varies), so a step costs about what a ReLU SAE's does.
    """

    name = "batchtopk"

    def __init__(
        self,
        n_latents: int = 32768,
        k: int = 32,
        threshold_lr: float = 0.01,
        inference: str = "jumprelu",
        k_aux: int = 256,
        auxk_coef: float = 1 / 32,
        dead_tokens: int = 10_000_000,
        normalize: bool = True,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(n_latents, k, k_aux, auxk_coef, dead_tokens, normalize, pre_bias_init)
        if inference not in ("jumprelu", "topk"):
            raise UserError(f"recipe.inference must be jumprelu or topk: {inference}")
        self.threshold_lr, self.inference = threshold_lr, inference
        self.jumprelu = inference == "jumprelu"
        self.prefixes = [n_latents]  # Matryoshka: several nested prefixes

    def new_sae(self, n_inputs: int, seed: int) -> Autoencoder:
        sae = Autoencoder.random(
            self.n_latents,
            n_inputs,
            k=None if self.jumprelu else self.k,
            seed=seed,
            normalize=self.normalize,
            jumprelu=self.jumprelu,
        )
        if self.jumprelu:  # set by `update_threshold`, not by the optimiser
            sae.threshold.requires_grad_(False)
        return sae

    def initial_latents(self, sae: Autoencoder, x: Tensor) -> Tensor:
        pre = sae.encode_pre_act(x)
        return pre * batch_topk_mask(pre, self.k)

    @torch.no_grad()
    def update_threshold(self, sae: Autoencoder, pre: Tensor, keep: Tensor) -> None:
        """The running threshold moves towards this batch's smallest kept activation."""
        smallest = torch.where(keep, pre, float("inf")).min()
        if distributed_rank()[1] > 1:
            torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN)
        # the first batch sets it: from SAELens's 0 it stays biased low for ~1/threshold_lr steps
        lr = torch.where(sae.threshold == 0, 1.0, self.threshold_lr)
        moved = (1 - lr) * sae.threshold + lr * smallest
        sae.threshold.copy_(torch.where(torch.isfinite(smallest), moved, sae.threshold))

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        """`mse_scale` x the MSE of each prefix's reconstruction, summed (one prefix, the whole
        dictionary, for BatchTopK), plus AuxK against the whole reconstruction's residual."""
        x, _ = sae.preprocess(x.float())
        centred = x - sae.pre_bias
        pre = torch.addmm(sae.latent_bias, centred, sae.W_enc.t())
        keep = batch_topk_mask(pre.detach(), self.k)
        latents = pre * keep
        loss, start, recons, logs = 0.0, 0, sae.pre_bias, {}
        for end in self.prefixes:  # each prefix adds its group's latents to the previous one
            recons = recons + latents[:, start:end] @ sae.W_dec[start:end]
            mse = (recons - x).pow(2).mean()
            loss = loss + mse_scale * mse
            if len(self.prefixes) > 1:
                logs[f"mse_prefix_{end}"] = mse
            start = end
        logs.update(reconstruction_logs(recons, x, mse))
        counts = keep.sum(0)
        record(sae, counts, len(x))
        if self.jumprelu:
            self.update_threshold(sae, pre.detach(), keep)
            logs["threshold"] = sae.threshold[0]
        loss = loss + self.auxk(sae, centred, pre.detach().clone(), x, recons, logs)
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})


def default_groups(n_latents: int) -> list[int]:
    """Group sizes n/16, n/16, n/8, n/4, n/2 (prefixes n/16, n/8, n/4, n/2, n), the rest
    going to the last group when n is not a multiple of 16."""
    prefixes = [n_latents // 16, n_latents // 8, n_latents // 4, n_latents // 2]
    prefixes = [p for p in prefixes if p > 0] + [n_latents]
    return [end - start for start, end in zip([0, *prefixes[:-1]], prefixes, strict=True)]


class Matryoshka(BatchTopK):
    """Matryoshka BatchTopK (Bussmann et al. 2025; Nabeshima 2024): BatchTopK's latents, and
    the loss summed over nested prefixes of the dictionary: prefix i (the first
    `group_sizes[0] + ... + group_sizes[i]` latents) reconstructs the input on its own. Early
    latents must serve every prefix, so they learn general features and later ones refine
    them; the latents are ordered by prefix. Saved as BatchTopK is (JumpReLU by default)."""

    name = "matryoshka"

    def __init__(
        self,
        n_latents: int = 32768,
        k: int = 32,
        group_sizes: list[int] | None = None,
        threshold_lr: float = 0.01,
        inference: str = "jumprelu",
        k_aux: int = 256,
        auxk_coef: float = 1 / 32,
        dead_tokens: int = 10_000_000,
        normalize: bool = True,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(
            n_latents,
            k,
            threshold_lr,
            inference,
            k_aux,
            auxk_coef,
            dead_tokens,
            normalize,
            pre_bias_init,
        )
        groups = list(group_sizes) if group_sizes else default_groups(n_latents)
        if sum(groups) != n_latents or min(groups) < 1:
            raise UserError(
                f"recipe.group_sizes={groups} must be positive and sum to recipe.n_latents="
                f"{n_latents}: e.g. recipe.group_sizes=null"
            )
        self.group_sizes = groups
        self.prefixes = [sum(groups[: i + 1]) for i in range(len(groups))]


# -- Multi-TopK ------------------------------------------------------------------------------
class MultiTopK(TopK):
    """Multi-TopK (OpenAI, "Scaling and evaluating sparse autoencoders", section 5.3):
    `L(k) + L(multiple x k) / 8`, the MSE of the top-k reconstruction plus an eighth of that of
    the top-4k one (both variance-scaled), so the SAE stays a good code at larger k at
    inference. Saved as TopK with this k. Firing statistics and AuxK follow the top-k code (the
    SAE as it is used), AuxK reconstructing the top-k residual."""

    name = "multi_topk"

    def __init__(
        self,
        n_latents: int = 32768,
        k: int = 32,
        multiple: int = 4,
        multiple_coef: float = 1 / 8,
        k_aux: int = 256,
        auxk_coef: float = 1 / 32,
        dead_tokens: int = 10_000_000,
        normalize: bool = True,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(n_latents, k, k_aux, auxk_coef, dead_tokens, normalize, pre_bias_init)
        self.multiple, self.multiple_coef = multiple, multiple_coef

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        x, _ = sae.preprocess(x.float())
        centred = x - sae.pre_bias
        with torch.no_grad():
            pre = torch.addmm(sae.latent_bias, centred, sae.W_enc.t())
        wide = min(self.multiple * self.k, sae.n_latents)
        # topk sorts its values: the first k of the top `wide` are the top k
        indices, values = topk_at(centred, sae.W_enc, sae.latent_bias, pre, wide)
        k_indices, k_values = indices[:, : self.k], values[:, : self.k]
        recons = sparse_decode(k_indices, k_values, sae.W_dec) + sae.pre_bias
        recons_wide = sparse_decode(indices, values, sae.W_dec) + sae.pre_bias
        mse = (recons - x).pow(2).mean()
        mse_wide = (recons_wide - x).pow(2).mean()
        loss = mse_scale * (mse + self.multiple_coef * mse_wide)
        logs = {**reconstruction_logs(recons, x, mse), f"mse_top{wide}": mse_wide}
        counts = fired_counts(k_indices, k_values, sae.n_latents)
        record(sae, counts, len(x))
        loss = loss + self.auxk(sae, centred, pre, x, recons, logs)
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})


# -- JumpReLU --------------------------------------------------------------------------------
def rectangle(u: Tensor) -> Tensor:
    """The kernel of the straight-through estimators: 1 on (-1/2, 1/2), else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """`pre * (pre > threshold)`. Backward (Rajamanoharan et al. 2024, eq. 11): `pre` gets
    the plain gradient where the latent is on; the threshold gets the pseudo-derivative
    `-(threshold / bandwidth) * rectangle((pre - threshold) / bandwidth)`, summed over tokens."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        near = rectangle((pre - threshold) / ctx.bandwidth)
        grad_threshold = (-(threshold / ctx.bandwidth) * near * grad).sum(0)
        return (pre > threshold) * grad, grad_threshold, None


class StepFunction(torch.autograd.Function):
    """`H(pre - threshold)` (1 where the latent is on). Backward: no gradient to `pre`; the
    threshold gets `-(1 / bandwidth) * rectangle((pre - threshold) / bandwidth)`, summed."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        near = rectangle((pre - threshold) / ctx.bandwidth)
        return None, (-(1 / ctx.bandwidth) * near * grad).sum(0), None


class LogThresholdAutoencoder(Autoencoder):
    """A JumpReLU `Autoencoder` whose thresholds are trained as `log_threshold` (they stay
    positive; Adam's steps are relative): `threshold` is `exp(log_threshold)`. Its state
    adds `log_threshold` to the usual keys (exact resume); saved files hold `threshold`
    and load as a plain JumpReLU `Autoencoder`."""

    def __init__(
        self,
        n_latents: int,
        n_inputs: int,
        k: int | None = None,
        normalize: bool | None = None,
        jumprelu: bool = True,
    ) -> None:
        super().__init__(n_latents, n_inputs, normalize=bool(normalize))
        self.jumprelu = True
        self.log_threshold = nn.Parameter(torch.zeros(n_latents))

    @property
    def threshold(self) -> Tensor:  # type: ignore[override]
        return self.log_threshold.exp()

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        value = self.log_threshold
        destination[prefix + "log_threshold"] = value if keep_vars else value.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        key = prefix + "log_threshold"
        with torch.no_grad():
            if key in state_dict:
                self.log_threshold.copy_(state_dict[key])
            elif prefix + "threshold" in state_dict:
                self.log_threshold.copy_(state_dict[prefix + "threshold"].log())
        rest = {name: value for name, value in state_dict.items() if name != key}
        super()._load_from_state_dict(rest, prefix, *args)


class JumpReLU(Recipe):
    """JumpReLU (Rajamanoharan et al. 2024; Gemma Scope): `latent = pre * (pre > threshold)`
    with a learned per-latent threshold, and a sparsity penalty on the mean L0 over tokens:

        loss = mse_scale * MSE + l0_coef * L0                       (target_l0 null: Gemma Scope)
        loss = mse_scale * MSE + l0_coef * (L0 / target_l0 - 1)^2   (dictionary_learning's
                                          JumpReluTrainer, which trained SAEBench's JumpReLUs)
               [+ pre_act_coef * mean over tokens of sum over dead latents of relu(threshold - pre)]

    The step functions have no useful gradient, so the thresholds learn through
    straight-through estimators with a rectangle kernel of width `bandwidth` (SAELens's
    "step" mode, Google DeepMind's; not Anthropic's tanh penalty); thresholds are
    `exp(log_threshold)`. The optional pre-activation penalty is SAELens's remedy for dead
    latents (Anthropic's, applied to dead latents only; decoder rows are unit-norm here, so
    their norm drops out). `l0_coef` is in units of the variance-scaled MSE (about the
    fraction of variance unexplained), as Gemma Scope's lambda is for activations normalised
    to unit mean square.

    Adam moves a log-threshold by about `lr` per step, so in a run of a few hundred steps the
    thresholds stay near where they start and so does L0: from SAELens's `init_threshold`
    0.01, a 196-step run of 512 latents on the tiny model ended at L0 320. With `target_l0`
    the encoder is scaled as without it (for the code at `init_threshold`), then every
    threshold starts at the one value at which the initialisation sample's mean L0 is
    `target_l0` (BatchTopK's cut-off), and the penalty pulls L0 towards it. (Scaling the
    encoder for the sparse code instead made its latents shrink below the thresholds in the
    first steps: L0 1.7 for a target of 8 after 98 steps.)
    """

    name = "jumprelu"
    jumprelu = True

    def __init__(
        self,
        n_latents: int = 32768,
        l0_coef: float = 1e-3,
        bandwidth: float = 0.05,
        init_threshold: float = 0.01,
        target_l0: float | None = None,
        pre_act_coef: float = 0.0,
        dead_tokens: int = 10_000_000,
        normalize: bool = True,
        pre_bias_init: str = "geometric_median",
    ) -> None:
        super().__init__(n_latents, pre_bias_init)
        self.l0_coef, self.bandwidth, self.init_threshold = l0_coef, bandwidth, init_threshold
        self.target_l0 = target_l0
        self.pre_act_coef, self.dead_tokens, self.normalize = pre_act_coef, dead_tokens, normalize

    def new_sae(self, n_inputs: int, seed: int) -> Autoencoder:
        sae = LogThresholdAutoencoder.random(
            self.n_latents, n_inputs, seed=seed, normalize=self.normalize
        )
        with torch.no_grad():
            sae.log_threshold.fill_(math.log(self.init_threshold))
        return sae

    def target_cutoff(self, pre: Tensor) -> Tensor:
        """The value above which `pre`'s tokens keep `target_l0` latents on average."""
        keep = max(1, round(self.target_l0 * len(pre)))
        return F.relu(pre).flatten().topk(keep).values[-1]

    def build(self, n_inputs: int, sample: Tensor, seed: int) -> tuple[Autoencoder, float]:
        sae, mse_scale = super().build(n_inputs, sample, seed)
        if self.target_l0 is not None:
            with torch.no_grad():
                pre = sae.encode_pre_act(sae.preprocess(sample.float())[0])
                cutoff = self.target_cutoff(pre).clamp_min(1e-12)
                sae.log_threshold.fill_(float(cutoff.log()))
        return sae, mse_scale

    def sparsity_loss(self, l0: Tensor) -> Tensor:
        if self.target_l0 is None:
            return self.l0_coef * l0
        return self.l0_coef * (l0 / self.target_l0 - 1).pow(2)

    def loss(
        self, sae: Autoencoder, x: Tensor, mse_scale: float | Tensor, record: Record = record_firing
    ) -> StepOutput:
        x, _ = sae.preprocess(x.float())
        pre = sae.encode_pre_act(x)
        threshold = sae.threshold
        latents = JumpReLUFunction.apply(pre, threshold, self.bandwidth)
        recons = latents @ sae.W_dec + sae.pre_bias
        mse = (recons - x).pow(2).mean()
        l0 = StepFunction.apply(pre, threshold, self.bandwidth).sum(-1).mean()
        loss = mse_scale * mse + self.sparsity_loss(l0)
        logs = {**reconstruction_logs(recons, x, mse), "l0_loss": l0}
        counts = (latents > 0).sum(0)
        record(sae, counts, len(x))
        if self.pre_act_coef:
            dead = sae.stats_last_nonzero > self.dead_tokens
            pre_act = (F.relu(threshold - pre) * dead).sum(-1).mean()
            loss = loss + self.pre_act_coef * pre_act
            logs["pre_act_loss"] = pre_act
        return StepOutput(loss, counts, {k: v.detach() for k, v in logs.items()})
