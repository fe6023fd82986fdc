"""saelab's own format: `sae.safetensors` + `sae.json` in one directory.

It expresses every SAE saelab can run (any activation/normalisation pairing) and records
where it came from (model, hook, recipe, tokens). Version 1 files (no JumpReLU) still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from saelab.errors import UserError
from saelab.formats.base import Checkpoint, config_value, read_json, tensor
from saelab.io import atomic_write, write_json
from saelab.sae.autoencoder import Autoencoder, check_k

NAME = "saelab"
FORMAT = "saelab-sae/2"
READS = ("saelab-sae/1", FORMAT)
WEIGHTS, CONFIG = "sae.safetensors", "sae.json"
TENSORS = (
    "pre_bias",
    "W_enc",
    "latent_bias",
    "W_dec",
    "stats_last_nonzero",
    "latents_activation_frequency",
    "latents_mean_square",
)


def weights_file(path: Path) -> Path:
    return path / WEIGHTS if path.is_dir() else path


def looks_like(path: Path) -> bool:
    weights = weights_file(path)
    config = weights.with_suffix(".json")
    return (
        weights.suffix == ".safetensors"
        and weights.is_file()
        and config.is_file()
        and (read_json(config).get("format") in READS)
    )


def save(sae: Autoencoder, directory: Path, metadata: dict[str, Any] | None = None) -> list[Path]:
    """`sae.safetensors`, then `sae.json` (the config, so a reader never finds it alone). The
    SAE's own shape and activation win over `metadata`'s keys (a BatchTopK run's provenance
    says k=32, but the SAE it saves is a JumpReLU, which has no k)."""
    names = (*TENSORS, "threshold") if sae.jumprelu else TENSORS
    tensors = {name: getattr(sae, name).detach().cpu().contiguous() for name in names}
    blob = safetensors_bytes(tensors)
    config = {
        **(metadata or {}),
        "format": FORMAT,
        "n_latents": sae.n_latents,
        "n_inputs": sae.n_inputs,
        "k": sae.k,
        "normalize": sae.normalize,
        "jumprelu": sae.jumprelu,
    }
    return [
        atomic_write(directory / WEIGHTS, lambda f: f.write(blob)),
        write_json(directory / CONFIG, config),
    ]


def load(path: Path) -> Checkpoint:
    """`sae.safetensors` (or its directory) with the `sae.json` beside it."""
    weights = weights_file(path)
    config_path = weights.with_suffix(".json")
    if not config_path.is_file():
        raise UserError(f"{weights} needs its config {config_path.name} beside it")
    config = read_json(config_path)
    if config.get("format") not in READS:
        raise UserError(f"{config_path} is not a saelab config (format {config.get('format')!r})")
    n, d = (config_value(config, key, int, config_path) for key in ("n_latents", "n_inputs"))
    k = config.get("k")
    check_k(k, n, where=str(config_path))
    jumprelu = bool(config.get("jumprelu", False))
    sae = Autoencoder(n, d, k=k, normalize=bool(config["normalize"]), jumprelu=jumprelu)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is truncated or corrupt ({error})") from None
    for name in (*TENSORS, "threshold") if jumprelu else TENSORS:
        target = getattr(sae, name)
        if target.is_floating_point():
            target.data.copy_(tensor(tensors, name, tuple(target.shape), weights))
        elif name not in tensors or tensors[name].shape != target.shape:  # a count per latent
            raise UserError(f"{weights}: {name} is missing or has the wrong shape")
        else:
            target.data.copy_(tensors[name])
    hook = config.get("hook")
    hook = hook if isinstance(hook, str) else None
    return Checkpoint(sae, weights, "saelab", hook, config.get("model"))
