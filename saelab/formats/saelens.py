"""SAELens's directory format: `cfg.json` + `sae_weights.safetensors`.

Weights `W_enc` [d_in, d_sae], `b_enc`, `W_dec` [d_sae, d_in], `b_dec`, and `threshold` for
JumpReLU. SAELens encodes `act(norm(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)` and
decodes `denorm(acts @ W_dec + b_dec)`; each option maps exactly onto the `Autoencoder`:

- `apply_b_dec_to_input: false` is the same SAE as pre_bias = b_dec with
  latent_bias = b_enc + b_dec @ W_enc;
- `normalize_activations: layer_norm` is OpenAI's layer norm (same formula and eps);
- `expected_average_only_in` scales inputs by the factor in `activation_scaler.json` and
  outputs back: folded into the weights as SAELens's `fold_activation_norm_scaling_factor`
  does (W_enc * s, W_dec / s, b_dec / s);
- `batchtopk` files hold the JumpReLU threshold SAELens saves them with; without one they run
  as TopK with their k.

The hook (`hook_name`) and model (`model_name`) come from `metadata` (SAELens 6) or the top
level (earlier versions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from saelab.errors import UserError
from saelab.formats.base import Checkpoint, config_value, read_json, tensor
from saelab.io import atomic_write, write_json
from saelab.sae.autoencoder import Autoencoder, check_k

NAME = "SAELens"
LAYOUT_VERSION = "6.0.0"  # the cfg.json layout written: SAELens 6 (metadata.hook_name, ...)
WEIGHTS, CONFIG, SCALER = "sae_weights.safetensors", "cfg.json", "activation_scaler.json"
ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
NORMALIZATIONS = ("none", "layer_norm", "expected_average_only_in")


def directory_of(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def looks_like(path: Path) -> bool:
    directory = directory_of(path)
    named = path.is_dir() or path.name == WEIGHTS
    return named and (directory / CONFIG).is_file() and (directory / WEIGHTS).is_file()


def activation(config: dict[str, Any], has_threshold: bool, path: Path) -> tuple[int | None, bool]:
    """(k, jumprelu) of an architecture."""
    arch = config.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise UserError(f"{path}: architecture {arch!r} is not supported (one of {ARCHITECTURES})")
    if arch == "jumprelu" or (arch == "batchtopk" and has_threshold):
        if not has_threshold:
            raise UserError(f"{path}: a jumprelu SAE needs its threshold in {WEIGHTS}")
        return None, True
    if arch == "standard":  # SAELens 5 wrote TopK as standard + activation_fn_str
        if config.get("activation_fn_str", "relu") == "relu":
            return None, False
        if config.get("activation_fn_str") != "topk":
            fn = config["activation_fn_str"]
            raise UserError(f"{path}: activation_fn_str {fn!r} is not supported (relu, topk)")
        config = {"k": (config.get("activation_fn_kwargs") or {}).get("k")}
    if config.get("rescale_acts_by_decoder_norm"):
        raise UserError(f"{path}: rescale_acts_by_decoder_norm=true is not supported")
    k = config.get("k")
    if arch == "batchtopk" and isinstance(k, float) and k.is_integer():
        k = int(k)  # BatchTopK's k is an average, a float in its config
    return config_value({"k": k}, "k", int, path), False


def load(path: Path) -> Checkpoint:
    directory = directory_of(path)
    config_path, weights = directory / CONFIG, directory / WEIGHTS
    config = read_json(config_path)
    d_in, d_sae = (config_value(config, key, int, config_path) for key in ("d_in", "d_sae"))
    norm = config.get("normalize_activations", "none")
    if norm not in NORMALIZATIONS:
        raise UserError(
            f"{config_path}: normalize_activations {norm!r} unsupported ({NORMALIZATIONS})"
        )
    if config.get("reshape_activations", "none") != "none":
        raise UserError(f"{config_path}: reshape_activations (hook_z SAEs) is not supported")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights} is truncated or corrupt ({error})") from None
    k, jumprelu = activation(config, "threshold" in tensors, config_path)
    check_k(k, d_sae, where=str(config_path))
    W_enc = tensor(tensors, "W_enc", (d_in, d_sae), weights)
    b_enc = tensor(tensors, "b_enc", (d_sae,), weights)
    W_dec = tensor(tensors, "W_dec", (d_sae, d_in), weights)
    b_dec = tensor(tensors, "b_dec", (d_in,), weights)
    if norm == "expected_average_only_in":
        if not (directory / SCALER).is_file():
            raise UserError(
                f"{config_path}: expected_average_only_in needs its scaling factor in "
                f"{directory / SCALER}"
            )
        scale = read_json(directory / SCALER).get("scaling_factor")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 0:
            raise UserError(f"{directory / SCALER}: scaling_factor must be a positive number")
        W_enc, W_dec, b_dec = W_enc * scale, W_dec / scale, b_dec / scale
    if not config.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc
    sae = Autoencoder(d_sae, d_in, k=k, normalize=norm == "layer_norm", jumprelu=jumprelu)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.T)
        sae.latent_bias.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.pre_bias.copy_(b_dec)
        if jumprelu:
            sae.threshold.copy_(tensor(tensors, "threshold", (d_sae,), weights))
    metadata = config.get("metadata") or {}
    hook = metadata.get("hook_name") or config.get("hook_name")
    model_name = metadata.get("model_name") or config.get("model_name")
    return Checkpoint(sae, weights, "saelens", hook, model_name)


def save(sae: Autoencoder, directory: Path, metadata: dict[str, Any] | None = None) -> list[Path]:
    """Weights, then `cfg.json` (SAELens 6 layout; every saelab SAE fits it)."""
    metadata = metadata or {}
    tensors = {
        "W_enc": sae.W_enc.T,
        "b_enc": sae.latent_bias,
        "W_dec": sae.W_dec,
        "b_dec": sae.pre_bias,
        **({"threshold": sae.threshold} if sae.jumprelu else {}),
    }
    blob = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    config = {
        "architecture": "jumprelu" if sae.jumprelu else "standard" if sae.k is None else "topk",
        "d_in": sae.n_inputs,
        "d_sae": sae.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm" if sae.normalize else "none",
        "reshape_activations": "none",
        **({"k": sae.k} if sae.k is not None else {}),
        # SAELens 6 reads `metadata` only when it names a 6.x layout (else it rebuilds it from
        # pre-6.0 top-level keys); the top-level copies serve readers of that older layout
        "metadata": {
            "sae_lens_version": LAYOUT_VERSION,
            "hook_name": metadata.get("hook"),
            "model_name": metadata.get("model"),
        },
        "hook_name": metadata.get("hook"),
        "model_name": metadata.get("model"),
    }
    return [
        atomic_write(directory / WEIGHTS, lambda f: f.write(blob)),
        write_json(directory / CONFIG, config),
    ]
