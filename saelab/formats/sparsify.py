"""EleutherAI sparsify's directory format: `cfg.json` + `sae.safetensors`, one per hook.

Weights `encoder.weight` [n, d_in], `encoder.bias` [n], `W_dec` [n, d_in], `b_dec` [d_in].
sparsify encodes `topk(relu(encoder(x - b_dec)), k)` and decodes `acts @ W_dec + b_dec`:
OpenAI's TopK (top k, then ReLU: the same values) with pre_bias = b_dec, on raw inputs.
A training run saves one subdirectory per hook, named by the Hugging Face module it hooks
(`h.6`, `h.6.mlp`, ...); the name gives the hook (`sae.subfolder=h.6` picks one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from saelab.errors import UserError
from saelab.formats.base import Checkpoint, config_value, read_json, tensor
from saelab.sae.autoencoder import Autoencoder, check_k

NAME = "sparsify"
WEIGHTS, CONFIG = "sae.safetensors", "cfg.json"
# a GPT-2 block's Hugging Face modules -> the TransformerLens hook of their output
MODULE_HOOKS = {
    "": "hook_resid_post",
    ".attn": "hook_attn_out",
    ".mlp": "hook_mlp_out",
    ".mlp.act": "mlp.hook_post",
}
HOOKPOINT = re.compile(
    r"(?:transformer\.|model\.)?(?:h|layers)\.(\d+)((?:\.mlp)?(?:\.act|\.attn)?)"
)


def is_single(directory: Path) -> bool:
    return (directory / CONFIG).is_file() and (directory / WEIGHTS).is_file()


def hookpoints(directory: Path) -> list[str]:
    """The subdirectories of a multi-hook run directory."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and is_single(p))


def looks_like(path: Path) -> bool:
    if path.is_dir():
        return is_single(path) or bool(hookpoints(path))
    return path.name == WEIGHTS and is_single(path.parent)


def hook_of(hookpoint: str) -> str | None:
    """`h.6.mlp` -> `blocks.6.hook_mlp_out`; None for a name that is not a GPT-2 module."""
    match = HOOKPOINT.fullmatch(hookpoint)
    if not match or match.group(2) not in MODULE_HOOKS:
        return None
    return f"blocks.{match.group(1)}.{MODULE_HOOKS[match.group(2)]}"


def check_config(config: dict[str, Any], path: Path) -> None:
    if config.get("activation", "topk") != "topk":
        raise UserError(f"{path}: activation {config['activation']!r} unsupported (topk only)")
    for option in ("transcode", "skip_connection"):
        if config.get(option):
            raise UserError(f"{path}: {option}=true is not an SAE saelab can run")


def load(path: Path) -> Checkpoint:
    directory = path if path.is_dir() else path.parent
    if not is_single(directory):
        raise UserError(
            f"{directory} holds one sparsify SAE per hook: choose one with sae.subfolder= "
            f"({', '.join(hookpoints(directory))})"
        )
    config_path, weights = directory / CONFIG, directory / WEIGHTS
    config = read_json(config_path)
    check_config(config, config_path)
    d_in, k = (config_value(config, key, int, config_path) for key in ("d_in", "k"))
    n = config.get("num_latents") or d_in * config_value(
        config, "expansion_factor", int, config_path
    )
    check_k(k, n, where=str(config_path))
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is truncated or corrupt ({error})") from None
    sae = Autoencoder(n, d_in, k=k, normalize=False)
    with torch.no_grad():
        sae.W_enc.copy_(tensor(tensors, "encoder.weight", (n, d_in), weights))
        sae.latent_bias.copy_(tensor(tensors, "encoder.bias", (n,), weights))
        sae.W_dec.copy_(tensor(tensors, "W_dec", (n, d_in), weights))
        sae.pre_bias.copy_(tensor(tensors, "b_dec", (d_in,), weights))
    return Checkpoint(sae, weights, "sparsify", hook_of(directory.name))
