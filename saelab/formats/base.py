"""What every format's loader shares: the loaded checkpoint, and validation of what it read.

Loaders check a file's own layout (names, shapes, dtypes, config) as they map it onto the
`Autoencoder`; `validate` then checks the mapped SAE once for every format (finite values),
so a damaged file fails on load with its path named, not later as NaN metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.sae.autoencoder import Autoencoder

TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false"}


@dataclass
class Checkpoint:
    """An SAE read from disk, the file that holds its weights (hashed for provenance), and
    the hook and model it was trained on where the format records them."""

    sae: Autoencoder
    weights: Path
    hook: str | None = None
    model_name: str | None = None
    format: str = ""  # set by `saelab.formats.load`


def read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a JSON {type(config).__name__}, not a config object")
    return config


def config_value(config: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """A required entry of a format's config, of the right type."""
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise UserError(f"{path}: {key} must be {TYPE_NAMES[kind]}, got {value!r}")
    return value


def tensor(tensors: dict[str, Any], name: str, shape: tuple[int, ...], path: Path | str) -> Tensor:
    """`tensors[name]` as float32, checked to exist with `shape` and a floating dtype."""
    value = tensors.get(name)
    if value is None:
        raise UserError(f"{path}: {name} is missing (found {', '.join(sorted(tensors))})")
    value = torch.as_tensor(value)
    if tuple(value.shape) != shape:
        raise UserError(f"{path}: {name} has shape {tuple(value.shape)}, expected {shape}")
    if not value.is_floating_point():
        raise UserError(f"{path}: {name} has dtype {value.dtype}, expected a float dtype")
    return value.float()


def validate(sae: Autoencoder, path: Path) -> Autoencoder:
    """Every weight finite, whatever format it came from."""
    for name, value in sae.named_parameters():
        bad = (~torch.isfinite(value)).sum().item()
        if bad:
            raise UserError(
                f"{path}: {name} has {bad} non-finite value(s) (NaN or inf: a diverged or "
                "damaged SAE); use another checkpoint"
            )
    return sae


def cannot_express(sae: Autoencoder, fmt: str, why: str) -> UserError:
    return UserError(
        f"{fmt}'s format cannot express this {sae.activation_name} SAE ({why}); "
        "convert it --to saelab, which can express every SAE"
    )
