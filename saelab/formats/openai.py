"""OpenAI's format (github openai/sparse_autoencoder): a `torch.save`d dict.

`pre_bias` [d], `encoder.weight` [n, d], `latent_bias` [n], `decoder.weight` [d, n], three
statistics buffers, `activation` ("ReLU" or "TopK"; absent in v1/v4 files, which are ReLU)
and `activation_state_dict` ({"k", "postact_fn"} for TopK). Their own `state_dict()` of a
TopK model also emits `activation.k` / `activation.postact_fn`: both variants load. The
mapping itself is the autoencoder's own (`Autoencoder.state_dict`/`from_state_dict`), as in
OpenAI's code; this module reads and writes the file. TopK means layer-normed inputs, ReLU
raw ones, so only those pairings can be written.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError, first_line
from saelab.formats.base import Checkpoint, cannot_express
from saelab.io import atomic_write
from saelab.sae.autoencoder import Autoencoder

NAME = "OpenAI"


def looks_like(path: Path) -> bool:
    """A torch checkpoint: a zip archive (torch >= 1.6) or a legacy pickle."""
    if not path.is_file():
        return False
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02" or path.suffix in (".pt", ".pth")


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
        raise UserError(f"{path} is truncated or corrupt ({first_line(error)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not an SAE state dict")
    try:
        sae = Autoencoder.from_state_dict(state)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    return Checkpoint(sae, path, "openai")


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
    state = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in sae.state_dict().items()}
    return [atomic_write(path, lambda f: torch.save(state, f))]
