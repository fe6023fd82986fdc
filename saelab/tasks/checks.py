"""Config values checked before anything loads: one function per command.

A zero batch, a negative learning rate or `k` above the number of latents would otherwise end
in a traceback from deep inside torch or Lightning, often after the model has loaded. Each
rule names the key, what it must be, and a value that works.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from saelab.data.activations import MANIFEST
from saelab.errors import UserError, first_line
from saelab.sae.autoencoder import check_k
from saelab.sources.places import check_location


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


POSITIVE_INT = ("a positive integer", lambda v: _int(v) and v > 0)
NON_NEGATIVE_INT = ("an integer >= 0 (0: off)", lambda v: _int(v) and v >= 0)
Rule = tuple[str, tuple[str, Callable[[Any], bool]], str]  # key, (requirement, test), example

DATA_RULES: list[Rule] = [
    ("data.n_tokens", POSITIVE_INT, "1048576"),
    ("data.n_ctx", ("an integer >= 2 (BOS and one token)", lambda v: _int(v) and v >= 2), "64"),
    ("data.batch_size", POSITIVE_INT, "32"),
]
TRAIN_RULES: list[Rule] = [
    ("recipe.n_latents", POSITIVE_INT, "32768"),
    ("train.n_tokens", POSITIVE_INT, "200_000_000"),
    ("train.batch_size", POSITIVE_INT, "4096"),
    ("train.buffer_contexts", POSITIVE_INT, "2048"),
    ("train.init_tokens", POSITIVE_INT, "65536"),
    ("train.lr", ("a positive number", lambda v: _number(v) and v > 0), "1e-4"),
    ("train.warmup_steps", NON_NEGATIVE_INT, "100"),
    ("train.decay_fraction", ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1), "0.2"),
    ("train.val_tokens", NON_NEGATIVE_INT, "65536"),
    ("train.val_every_n_steps", NON_NEGATIVE_INT, "1000"),
    ("train.checkpoint_every_n_steps", NON_NEGATIVE_INT, "1000"),
    ("train.histogram_every_n_steps", NON_NEGATIVE_INT, "500"),
    (
        "train.ema_decay",
        ("null or a number in (0, 1)", lambda v: v is None or (_number(v) and 0 < v < 1)),
        "0.999",
    ),
]


def apply(cfg: DictConfig, rules: list[Rule]) -> None:
    for key, (requirement, test), example in rules:
        value = OmegaConf.select(cfg, key)
        if not test(value):
            raise UserError(f"{key}={value} must be {requirement}: e.g. {key}={example}")


def check_eval(cfg: DictConfig) -> None:
    """Everything `saelab eval` can check before the SAE and the model load (location and
    layer may be left to the checkpoint, where its format records its hook)."""
    if cfg.location is not None:
        check_location(cfg.location)
    if cfg.layer is not None and not _int(cfg.layer):
        raise UserError(f"layer must be an integer, got layer={cfg.layer!r}")
    apply(cfg, DATA_RULES)


def check_train(cfg: DictConfig) -> None:
    """Everything `saelab train` can check before the model loads."""
    apply(cfg, DATA_RULES + TRAIN_RULES)
    if cfg.train.n_tokens < cfg.train.batch_size:
        raise UserError(
            f"train.n_tokens={cfg.train.n_tokens} is less than one batch "
            f"(train.batch_size={cfg.train.batch_size} tokens)"
        )
    if "k" in cfg.recipe:  # a TopK recipe keeps recipe.k latents per token
        if cfg.recipe.k is None:
            raise UserError("recipe.k=null: a TopK recipe keeps k latents per token, e.g. 32")
        check_k(cfg.recipe.k, cfg.recipe.n_latents, key="recipe.k")
    if cfg.get("ckpt_path"):
        check_training_checkpoint(Path(cfg.ckpt_path))
    if cfg.train.activation_cache:
        check_writable_cache(Path(cfg.train.activation_cache))


def check_training_checkpoint(path: Path) -> None:
    """A `.ckpt` written by `saelab train` (Lightning's format), loaded as Lightning will load
    it (`weights_only`), memory-mapped so that checking costs no copy of the weights."""
    if not path.is_file():
        raise UserError(f"ckpt_path={path} does not exist")
    hint = (
        "pass a .ckpt from logs/train/runs/<run_name>/checkpoints, or run_name=<run_name> "
        "resume=true"
    )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # not a zip archive, not a pickle, a foreign type: all the same
        raise UserError(
            f"ckpt_path={path} is not a training checkpoint ({first_line(error, 100)}); {hint}"
        ) from None
    if not (isinstance(checkpoint, dict) and {"state_dict", "global_step"} <= checkpoint.keys()):
        raise UserError(
            f"ckpt_path={path} is not a training checkpoint (an SAE file? those are for "
            f"saelab eval sae=file); {hint}"
        )


def check_writable_cache(directory: Path) -> None:
    """A complete cache only needs reading; otherwise the nearest folder that exists at or
    above it must be a directory in which a folder can be made (tried and removed: the
    permission bits alone pass e.g. /proc for root)."""
    if (directory / MANIFEST).is_file():
        return
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".saelab-check-"))
            return
        except OSError as error:
            reason = f"{existing}: {error.strerror or first_line(error)}"
    raise UserError(
        f"train.activation_cache={directory} cannot be written: {reason}; "
        "choose a writable directory"
    )
