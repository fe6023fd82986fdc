"""Gemma Scope's `params.npz`: `W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc`,
`b_dec`, `threshold` (JumpReLU).

Gemma Scope encodes `pre = x @ W_enc + b_enc`, `acts = relu(pre) * (pre > threshold)` (b_dec
is not subtracted from the input) and decodes `acts @ W_dec + b_dec`: the `Autoencoder` with
pre_bias = b_dec and latent_bias = b_enc + b_dec @ W_enc. The file records no hook: the
repository's path does (`layer_5/width_16k/...`), so give `layer=` and `location=`.
Read with `allow_pickle=False`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from saelab.errors import UserError
from saelab.formats.base import Checkpoint, tensor
from saelab.sae.autoencoder import Autoencoder

NAME = "Gemma Scope"
WEIGHTS = "params.npz"


def weights_file(path: Path) -> Path:
    return path / WEIGHTS if path.is_dir() else path


def looks_like(path: Path) -> bool:
    weights = weights_file(path)
    return weights.suffix == ".npz" and weights.is_file()


def load(path: Path) -> Checkpoint:
    weights = weights_file(path)
    try:
        with np.load(weights, allow_pickle=False) as npz:
            arrays = {name: torch.from_numpy(npz[name]) for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"{weights} is truncated or corrupt ({error})") from None
    if "W_enc" not in arrays or arrays["W_enc"].ndim != 2:
        raise UserError(f"{weights}: W_enc [d_in, d_sae] is missing (found {', '.join(arrays)})")
    d_in, d_sae = arrays["W_enc"].shape
    W_enc = tensor(arrays, "W_enc", (d_in, d_sae), weights)
    b_dec = tensor(arrays, "b_dec", (d_in,), weights)
    sae = Autoencoder(d_sae, d_in, jumprelu=True)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.T)
        sae.latent_bias.copy_(tensor(arrays, "b_enc", (d_sae,), weights) + b_dec @ W_enc)
        sae.W_dec.copy_(tensor(arrays, "W_dec", (d_sae, d_in), weights))
        sae.pre_bias.copy_(b_dec)
        sae.threshold.copy_(tensor(arrays, "threshold", (d_sae,), weights))
    return Checkpoint(sae, weights, "gemmascope")
