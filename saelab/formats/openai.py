"""OpenAI's format (github openai/sparse_autoencoder): a `torch.save`d dict.

`pre_bias` [d], `encoder.weight` [n, d], `latent_bias` [n], `decoder.weight` [d, n], three
statistics buffers, `activation` ("ReLU" or "TopK"; absent in v1/v4 files, which are ReLU)
and `activation_state_dict` ({"k", "postact_fn"} for TopK). Their own `state_dict()` of a
TopK model also emits `activation.k` / `activation.postact_fn`: both variants load. TopK
means layer-normed inputs, ReLU raw ones, so only those pairings can be written.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.formats.base import Checkpoint, cannot_express, tensor
from saelab.io import atomic_write
from saelab.sae.autoencoder import Autoencoder

NAME = "OpenAI"
BUFFERS = ("stats_last_nonzero", "latents_activation_frequency", "latents_mean_square")
# OpenAI's own state_dict() of a TopK model also emits these; their loader then rejects them.
ACTIVATION_KEYS = ("activation.k", "activation.postact_fn")


def looks_like(path: Path) -> bool:
    """A torch checkpoint: a zip archive (torch >= 1.6) or a legacy pickle."""
    if not path.is_file():
        return False
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02" or path.suffix in (".pt", ".pth")


def state_dict(sae: Autoencoder, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
    """The module's state in OpenAI's layout (a JumpReLU SAE adds its `threshold`)."""

    def value(t: Tensor) -> Tensor:
        return t if keep_vars else t.detach()

    out: dict[str, Any] = {
        "pre_bias": value(sae.pre_bias),
        "encoder.weight": value(sae.W_enc),
        "latent_bias": value(sae.latent_bias),
        "decoder.weight": value(sae.W_dec).T,
        **{name: value(getattr(sae, name)) for name in BUFFERS},
        "activation": sae.activation_name,
        "activation_state_dict": {} if sae.k is None else {"k": sae.k, "postact_fn": "ReLU"},
    }
    if sae.jumprelu:
        out["threshold"] = value(sae.threshold)
    return {prefix + key: v for key, v in out.items()}


def load_into(
    sae: Autoencoder,
    state: dict,
    prefix: str,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """`nn.Module._load_from_state_dict` for OpenAI's layout (transposed decoder)."""
    targets = {
        "pre_bias": sae.pre_bias,
        "encoder.weight": sae.W_enc,
        "latent_bias": sae.latent_bias,
        "decoder.weight": sae.W_dec,
        **{name: getattr(sae, name) for name in BUFFERS},
        **({"threshold": sae.threshold} if sae.jumprelu else {}),
    }
    for key, target in targets.items():
        if prefix + key not in state:
            missing_keys.append(prefix + key)
            continue
        value = state[prefix + key]
        if key == "decoder.weight":
            value = value.T
        if value.shape != target.shape:
            error_msgs.append(
                f"{prefix + key}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(target.shape)}"
            )
            continue
        with torch.no_grad():
            target.copy_(value)
    known = {*targets, "activation", "activation_state_dict", *ACTIVATION_KEYS}
    if strict:
        ours = (key for key in state if key.startswith(prefix))
        unexpected_keys.extend(key for key in ours if key[len(prefix) :] not in known)


def from_state_dict(state: dict[str, Any], strict: bool = True) -> Autoencoder:
    """Build from OpenAI's serialized dict (with or without `activation.k` entries).

    Files without an `activation` entry (v1 and v4 predate it) are ReLU, as in OpenAI's
    loader."""
    required = ("pre_bias", "encoder.weight", "latent_bias", "decoder.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise UserError(
            f"not an OpenAI-format SAE checkpoint: missing {', '.join(missing)} "
            f"(found keys: {', '.join(sorted(map(str, state))[:8])})"
        )
    activation = state.get("activation", "ReLU")
    act_state = dict(state.get("activation_state_dict") or {})
    if activation == "TopK":
        k = int(act_state.get("k", state.get("activation.k", 0)))
        postact = act_state.get("postact_fn", state.get("activation.postact_fn", "ReLU"))
        if postact != "ReLU":
            raise UserError(f"unsupported TopK postact_fn {postact!r} (only ReLU)")
    elif activation == "ReLU":
        k = None
    else:
        raise UserError(f"unsupported SAE activation {activation!r} (ReLU or TopK)")
    n_latents, n_inputs = state["encoder.weight"].shape
    if k is not None and not 0 < k <= n_latents:
        raise UserError(f"TopK k={k} is not in [1, n_latents={n_latents}]")
    for name, shape in (
        ("pre_bias", (n_inputs,)),
        ("latent_bias", (n_latents,)),
        ("decoder.weight", (n_inputs, n_latents)),
    ):
        tensor(state, name, shape, "OpenAI checkpoint")
    sae = Autoencoder(n_latents, n_inputs, k=k)
    sae.load_state_dict(state, strict=strict)
    return sae


def load(path: Path) -> Checkpoint:
    """Read with `weights_only=True`: code in a checkpoint is never unpickled."""
    try:
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) and "GLOBAL" in str(error):
            raise UserError(
                f"{path} needs arbitrary unpickling, which saelab refuses (it loads checkpoints "
                "with weights_only=True); re-save it as a plain dict of tensors"
            ) from None
        raise UserError(f"{path} is not a torch checkpoint (corrupt or wrong file)") from None
    except Exception as error:  # a damaged file fails in many ways inside torch.load
        reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise UserError(f"{path} is truncated or corrupt ({reason})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not an SAE state dict")
    try:
        sae = from_state_dict(state)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except RuntimeError as error:  # key mismatches reported by load_state_dict
        raise UserError(f"{path} is not a consistent SAE checkpoint: {error}") from None
    return Checkpoint(sae, path)


def check_expressible(sae: Autoencoder) -> None:
    if sae.jumprelu:
        raise cannot_express(sae, NAME, "it has ReLU and TopK only")
    if sae.normalize != (sae.k is not None):
        how = "layer-normed" if sae.normalize else "raw"
        raise cannot_express(
            sae, NAME, f"its TopK reads layer-normed inputs and its ReLU raw ones, this reads {how}"
        )


def can_express(sae: Autoencoder) -> bool:
    try:
        check_expressible(sae)
    except UserError:
        return False
    return True


def save(sae: Autoencoder, path: Path, metadata: dict[str, Any] | None = None) -> list[Path]:
    """One `.pt` file, exactly as OpenAI's release lays it out (their format has no metadata)."""
    check_expressible(sae)
    state = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state_dict(sae).items()}
    return [atomic_write(path, lambda f: torch.save(state, f))]
