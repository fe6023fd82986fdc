"""Sparse autoencoder compatible with OpenAI's reference `Autoencoder` and its checkpoints.

Maths (OpenAI, sparse_autoencoder/model.py):
    latents = act(W_enc (x - pre_bias) + latent_bias)
    recons  = W_dec latents + pre_bias
TopK checkpoints expect layer-normed inputs: x is mean-centred and divided by (std + 1e-5)
(unbiased std, torch's default), and decode undoes both.

`act` is ReLU, TopK (ReLU on the k largest) or JumpReLU (`relu(pre) * (pre > threshold)`
with a per-latent threshold, as in SAELens and Gemma Scope). Other libraries' SAEs map onto
these parameters exactly (see `saelab.formats`), so every plugin sees one interface.

The decoder is held as `W_dec` [n_latents, d] so that a TopK decode is a gather of k rows
(`embedding_bag`). `state_dict()` and `from_state_dict` use OpenAI's layout (their
`decoder.weight` [d, n_latents]), so their code and files work with this class unchanged;
`saelab.formats.openai` reads and writes those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saelab.errors import UserError
from saelab.sae.kernels import sparse_decode

LN_EPS = 1e-5
BUFFERS = ("stats_last_nonzero", "latents_activation_frequency", "latents_mean_square")
# OpenAI's own state_dict() of a TopK model also emits these; their loader then rejects them.
ACTIVATION_KEYS = ("activation.k", "activation.postact_fn")


@dataclass
class SparseLatents:
    """The k active latents of each input row: `indices` [N, k] and their `values` [N, k]."""

    indices: Tensor
    values: Tensor
    n_latents: int

    def to_dense(self) -> Tensor:
        dense = self.values.new_zeros(*self.values.shape[:-1], self.n_latents)
        return dense.scatter_(-1, self.indices, self.values)


class Autoencoder(nn.Module):
    """OpenAI-compatible SAE. `k=None` is ReLU; an int k is TopK (ReLU on the k largest);
    `jumprelu=True` is JumpReLU with the per-latent `threshold`."""

    def __init__(
        self,
        n_latents: int,
        n_inputs: int,
        k: int | None = None,
        normalize: bool | None = None,
        jumprelu: bool = False,
    ) -> None:
        super().__init__()
        check_k(k, n_latents)
        if jumprelu and k is not None:
            raise ValueError("an SAE is TopK (k) or JumpReLU, not both")
        self.n_latents, self.n_inputs, self.k, self.jumprelu = n_latents, n_inputs, k, jumprelu
        # OpenAI's loader treats TopK as meaning layer-normed inputs.
        self.normalize = (k is not None) if normalize is None else normalize
        self.pre_bias = nn.Parameter(torch.zeros(n_inputs))
        self.W_enc = nn.Parameter(torch.zeros(n_latents, n_inputs))
        self.latent_bias = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.zeros(n_latents, n_inputs))
        self.register_buffer("stats_last_nonzero", torch.zeros(n_latents, dtype=torch.long))
        self.register_buffer("latents_activation_frequency", torch.ones(n_latents))
        self.register_buffer("latents_mean_square", torch.zeros(n_latents))
        if jumprelu:
            self.threshold = nn.Parameter(torch.zeros(n_latents))

    @classmethod
    def random(
        cls,
        n_latents: int,
        n_inputs: int,
        k: int | None = None,
        seed: int = 0,
        normalize: bool | None = None,
        jumprelu: bool = False,
    ) -> Autoencoder:
        """An untrained SAE: random unit-norm decoder rows, encoder tied to the decoder."""
        sae = cls(n_latents, n_inputs, k=k, normalize=normalize, jumprelu=jumprelu)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            directions = torch.randn(n_latents, n_inputs, generator=generator)
            sae.W_dec.copy_(directions / directions.norm(dim=-1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec)
        return sae

    @property
    def activation_name(self) -> str:
        return "JumpReLU" if self.jumprelu else "ReLU" if self.k is None else "TopK"

    # -- input normalisation ------------------------------------------------------------
    def preprocess(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.normalize:
            return x, {}
        mu = x.mean(dim=-1, keepdim=True)
        x = x - mu
        std = x.std(dim=-1, keepdim=True)
        return x / (std + LN_EPS), {"mu": mu, "std": std}

    @staticmethod
    def postprocess(recons: Tensor, info: dict[str, Tensor]) -> Tensor:
        return recons * info["std"] + info["mu"] if info else recons

    # -- dense path (OpenAI's API) ------------------------------------------------------
    def encode_pre_act(self, x: Tensor) -> Tensor:
        return F.linear(x - self.pre_bias, self.W_enc, self.latent_bias)

    def activation(self, pre: Tensor) -> Tensor:
        if self.jumprelu:
            return F.relu(pre) * (pre > self.threshold)
        if self.k is None:
            return F.relu(pre)
        return self.as_sparse(pre).to_dense()

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x, info = self.preprocess(x)
        return self.activation(self.encode_pre_act(x)), info

    def decode(self, latents: Tensor, info: dict[str, Tensor]) -> Tensor:
        return self.postprocess(latents @ self.W_dec + self.pre_bias, info)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (latents_pre_act, latents, recons), as OpenAI's reference does."""
        x, info = self.preprocess(x)
        pre = self.encode_pre_act(x)
        latents = self.activation(pre)
        return pre, latents, self.decode(latents, info)

    # -- sparse TopK path ---------------------------------------------------------------
    def as_sparse(self, pre: Tensor) -> SparseLatents:
        assert self.k is not None, "the sparse path is for TopK autoencoders"
        top = torch.topk(pre, self.k, dim=-1)
        return SparseLatents(top.indices, F.relu(top.values), self.n_latents)

    def encode_sparse(self, x: Tensor) -> tuple[SparseLatents, dict[str, Tensor]]:
        x, info = self.preprocess(x)
        return self.as_sparse(self.encode_pre_act(x)), info

    def decode_sparse(self, latents: SparseLatents, info: dict[str, Tensor]) -> Tensor:
        """Sum of the k selected decoder rows, weighted: never touches the other latents
        (through the fastest sparse kernel of the device, see `saelab.sae.kernels`)."""
        flat_idx = latents.indices.reshape(-1, latents.indices.shape[-1])
        flat_val = latents.values.reshape(flat_idx.shape)
        recons = sparse_decode(flat_idx, flat_val, self.W_dec)
        recons = recons.reshape(*latents.indices.shape[:-1], self.n_inputs) + self.pre_bias
        return self.postprocess(recons, info)

    # -- serialization: OpenAI's layout ----------------------------------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """OpenAI's layout (`decoder.weight` [d, n]); a JumpReLU SAE adds its `threshold`."""
        for key, value in self._layout().items():
            value = value if keep_vars else value.detach()
            destination[prefix + key] = value.T if key == "decoder.weight" else value
        destination[prefix + "activation"] = self.activation_name
        topk = {"k": self.k, "postact_fn": "ReLU"}
        destination[prefix + "activation_state_dict"] = {} if self.k is None else topk

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Reads OpenAI's layout: the decoder transposed, every tensor a float one."""
        targets = self._layout()
        for key, target in targets.items():
            if prefix + key not in state_dict:
                missing_keys.append(prefix + key)
                continue
            value = torch.as_tensor(state_dict[prefix + key])
            value = value.T if key == "decoder.weight" else value
            if value.shape != target.shape:
                error_msgs.append(
                    f"{prefix + key}: checkpoint shape {tuple(value.shape)} != model shape "
                    f"{tuple(target.shape)}"
                )
            elif value.is_floating_point() is not target.is_floating_point():
                error_msgs.append(f"{prefix + key}: dtype {value.dtype}, expected {target.dtype}")
            else:
                with torch.no_grad():
                    target.copy_(value)
        known = {*targets, "activation", "activation_state_dict", *ACTIVATION_KEYS}
        if strict:
            ours = (key for key in state_dict if key.startswith(prefix))
            unexpected_keys.extend(key for key in ours if key[len(prefix) :] not in known)

    def _layout(self) -> dict[str, Tensor]:
        """OpenAI's name for each tensor (the decoder as held here, [n, d])."""
        return {
            "pre_bias": self.pre_bias,
            "encoder.weight": self.W_enc,
            "latent_bias": self.latent_bias,
            "decoder.weight": self.W_dec,
            **{name: getattr(self, name) for name in BUFFERS},
            **({"threshold": self.threshold} if self.jumprelu else {}),
        }

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], strict: bool = True) -> Autoencoder:
        """Build from OpenAI's serialized dict (with or without `activation.k` entries).

        Files without an `activation` entry (v1 and v4 predate it) are ReLU, as in OpenAI's
        loader. A missing tensor, a wrong shape or dtype, a bad `k` is a `UserError`."""
        required = ("pre_bias", "encoder.weight", "latent_bias", "decoder.weight")
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise UserError(
                f"not an OpenAI-format SAE checkpoint: missing {', '.join(missing)} "
                f"(found keys: {', '.join(sorted(map(str, state_dict))[:8])})"
            )
        activation = state_dict.get("activation", "ReLU")
        act_state = dict(state_dict.get("activation_state_dict") or {})
        if activation == "TopK":
            k = act_state.get("k", state_dict.get("activation.k"))
            postact = act_state.get("postact_fn", state_dict.get("activation.postact_fn", "ReLU"))
            if postact != "ReLU":
                raise UserError(f"unsupported TopK postact_fn {postact!r} (only ReLU)")
        elif activation == "ReLU":
            k = None
        else:
            raise UserError(f"unsupported SAE activation {activation!r} (ReLU or TopK)")
        encoder = torch.as_tensor(state_dict["encoder.weight"])
        if encoder.ndim != 2:
            raise UserError(f"encoder.weight has shape {tuple(encoder.shape)}, expected [n, d]")
        n_latents, n_inputs = encoder.shape
        k = k.item() if isinstance(k, Tensor) and k.numel() == 1 else k
        check_k(k, n_latents, key="TopK k")
        sae = cls(n_latents, n_inputs, k=k)
        try:
            sae.load_state_dict(state_dict, strict=strict)
        except RuntimeError as error:  # every mismatch load_state_dict found, in one message
            details = " ".join(str(error).split())
            raise UserError(f"not a consistent OpenAI-format SAE checkpoint: {details}") from None
        return sae


def check_k(k: Any, n_latents: int, key: str = "k", where: str = "") -> None:
    """The one check of `k`: null (not TopK) or an integer from 1 to `n_latents`."""
    if k is None or (isinstance(k, int) and not isinstance(k, bool) and 0 < k <= n_latents):
        return
    n_key = key.rpartition("k")[0] + "n_latents"  # recipe.k -> recipe.n_latents
    raise UserError(
        f"{where + ': ' if where else ''}{key}={k!r} must be an integer from 1 to "
        f"{n_key}={n_latents} (the latents kept per token)"
    )
