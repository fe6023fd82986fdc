"""What every format's loader shares: the checkpoint type, and validation of what it read.

Loaders check a file's own layout (names, shapes, dtypes, config) as they map it onto the
`Autoencoder`; `validate` then checks the mapped SAE once for every format (finite values),
so a damaged file fails on load with its path named, not later as NaN metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.io import sha256
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.places import Place

TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false"}
MODEL_ALIASES = {"gpt2-small": "gpt2"}  # TransformerLens's name for GPT-2 small


@dataclass
class Checkpoint:
    """An SAE and where it came from: the file holding its weights (hashed for provenance;
    None for an SAE in memory, e.g. in training), its format, the hook and model it was
    trained on where the format records them, the path or URL it was asked for, and whether
    that model must match the one it is run on."""

    sae: Autoencoder
    weights: Path | None
    format: str
    hook: str | None = None
    model_name: str | None = None
    source: str = ""
    check_model: bool = True
    family: str | None = None  # the family it belongs to (OpenAI's v5_32k, a zoo family)

    def __post_init__(self) -> None:
        self.source = self.source or str(self.weights or "")

    @cached_property
    def sha256(self) -> str | None:
        return sha256(self.weights) if self.weights is not None else None

    @property
    def place(self) -> Place | None:
        """Where the checkpoint says it reads (None: it does not say)."""
        return Place.of_hook(self.hook) if self.hook else None

    def check_model_name(self, model_name: str) -> None:
        """The model it was trained on, where recorded, must be `model_name`."""
        trained_on = MODEL_ALIASES.get(self.model_name, self.model_name)
        if self.check_model and trained_on and trained_on != model_name:
            raise UserError(
                f"the SAE was trained on {self.model_name!r} but the model is {model_name!r}: "
                "choose the matching model=, or add sae.check_model=false to evaluate it anyway"
            )

    def provenance(self) -> dict[str, str | int | None]:
        return {
            "sae_source": self.source,
            "sae_family": self.family,
            "sae_format": self.format,
            "sae_sha256": self.sha256,
            "sae_activation": self.sae.activation_name,
            "sae_k": self.sae.k,
            "sae_n_latents": self.sae.n_latents,
        }


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
