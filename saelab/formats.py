"""saelab's own SAE format (safetensors + JSON config) and OpenAI's, for finished SAEs.

saelab's format can express every SAE (any activation/normalisation pairing) and records
where it came from; OpenAI's format is written where it can express the SAE: TopK with
layer-normed inputs, or ReLU without.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from saelab.autoencoder import Autoencoder
from saelab.errors import UserError
from saelab.io import atomic_write, write_json

FORMAT = "saelab-sae/1"
TENSORS = (
    "pre_bias",
    "W_enc",
    "latent_bias",
    "W_dec",
    "stats_last_nonzero",
    "latents_activation_frequency",
    "latents_mean_square",
)


def openai_can_express(sae: Autoencoder) -> bool:
    return sae.normalize == (sae.k is not None)


def save_sae(sae: Autoencoder, directory: Path, metadata: dict[str, Any]) -> list[Path]:
    """`sae.safetensors` + `sae.json`, and `sae.pt` in OpenAI's format where it fits."""
    tensors = {name: getattr(sae, name).detach().cpu().contiguous() for name in TENSORS}
    blob = save(tensors)
    written = [atomic_write(directory / "sae.safetensors", lambda f: f.write(blob))]
    config = {
        "format": FORMAT,
        "n_latents": sae.n_latents,
        "n_inputs": sae.n_inputs,
        "k": sae.k,
        "normalize": sae.normalize,
        **metadata,
    }
    written.append(write_json(directory / "sae.json", config))
    if openai_can_express(sae):
        state = {
            k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in sae.state_dict().items()
        }
        written.append(atomic_write(directory / "sae.pt", lambda f: torch.save(state, f)))
    return written


def load_saelab(path: Path) -> Autoencoder:
    """Load `sae.safetensors` with the `sae.json` beside it."""
    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise UserError(f"{path} needs its config {config_path.name} beside it")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise UserError(f"{config_path} is not a {FORMAT} config")
    sae = Autoencoder(
        config["n_latents"], config["n_inputs"], k=config["k"], normalize=config["normalize"]
    )
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors reports damage in several ways
        raise UserError(f"{path} is truncated or corrupt ({error})") from None
    with torch.no_grad():
        for name in TENSORS:
            if name not in tensors or tensors[name].shape != getattr(sae, name).shape:
                raise UserError(f"{path}: {name} is missing or has the wrong shape")
            getattr(sae, name).copy_(tensors[name])
    return sae
