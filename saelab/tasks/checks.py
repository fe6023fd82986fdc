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

from omegaconf import DictConfig, OmegaConf

from saelab.data.activations import MANIFEST
from saelab.errors import UserError, first_line
from saelab.sae.autoencoder import check_k
from saelab.sources.places import check_location
from saelab.sources.precision import Precision, run_device
from saelab.train.loop import check_training_checkpoint


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    """A number > 0, or its text (YAML reads `4e9` as a string)."""
    try:
        return not isinstance(value, bool) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _folder_name(value: Any) -> bool:
    """A name that stays inside the folder it is joined to: relative, no `..` part."""
    parts = Path(str(value)).parts
    return value is not None and not Path(str(value)).is_absolute() and ".." not in parts


TOKEN_BYTES = 8  # a token id in memory (int64)
POSITIVE_INT = ("a positive integer", lambda v: _int(v) and v > 0)
NON_NEGATIVE_INT = ("an integer >= 0 (0: off)", lambda v: _int(v) and v >= 0)
Rule = tuple[str, tuple[str, Callable[[Any], bool]], str]  # key, (requirement, test), example

RUN_RULES: list[Rule] = [
    ("seed", ("an integer", _int), "0"),
    ("run_name", ("a folder name inside logs/<command>/runs (no '..', not absolute)",
                  _folder_name), "my_run"),
]  # fmt: skip
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

NON_NEGATIVE = ("a number >= 0", lambda v: _number(v) and v >= 0)
POSITIVE = ("a positive number", lambda v: _number(v) and v > 0)
# the keys of particular recipes, checked where the chosen recipe has them
RECIPE_RULES: list[Rule] = [
    ("recipe.k_aux", POSITIVE_INT, "256"),
    ("recipe.auxk_coef", NON_NEGATIVE, "0.03125"),
    ("recipe.dead_tokens", NON_NEGATIVE_INT, "10_000_000"),
    ("recipe.threshold_lr", ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1), "0.01"),
    ("recipe.inference", ("jumprelu or topk", lambda v: v in ("jumprelu", "topk")), "jumprelu"),
    ("recipe.multiple", ("an integer >= 2", lambda v: _int(v) and v >= 2), "4"),
    ("recipe.multiple_coef", NON_NEGATIVE, "0.125"),
    ("recipe.l0_coef", NON_NEGATIVE, "0.001"),
    ("recipe.bandwidth", POSITIVE, "0.05"),
    ("recipe.init_threshold", POSITIVE, "0.01"),
    (
        "recipe.target_l0",
        ("null or a positive number", lambda v: v is None or POSITIVE[1](v)),
        "32",
    ),
    ("recipe.pre_act_coef", NON_NEGATIVE, "0"),
]


def check_fits(n_bytes: float, what: str) -> None:
    """Memory that a setting implies, checked against the machine's before it is allocated."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if n_bytes > total:
        raise UserError(
            f"{what} needs about {n_bytes / 2**30:,.1f} GiB of memory; this machine has "
            f"{total / 2**30:,.1f} GiB: choose a smaller value"
        )


def apply(cfg: DictConfig, rules: list[Rule], present_only: bool = False) -> None:
    for key, (requirement, test), example in rules:
        if present_only and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        value = OmegaConf.select(cfg, key)
        if not test(value):
            raise UserError(f"{key}={value} must be {requirement}: e.g. {key}={example}")


def check_precision(cfg: DictConfig) -> None:
    """`precision=`: a known name, that the run's device can do."""
    Precision.parse(cfg.precision).check(run_device(str(cfg.trainer.accelerator)))


def check_eval(cfg: DictConfig) -> None:
    """Everything `saelab eval` can check before the SAE and the model load (location and
    layer may be left to the checkpoint, where its format records its hook)."""
    if cfg.location is not None:
        check_location(cfg.location)
    if cfg.layer is not None and not _int(cfg.layer):
        raise UserError(f"layer must be an integer, got layer={cfg.layer!r}")
    apply(cfg, RUN_RULES + DATA_RULES)
    check_precision(cfg)
    check_fits(cfg.data.n_tokens * TOKEN_BYTES, f"data.n_tokens={cfg.data.n_tokens}")
    export = cfg.get("export")
    if isinstance(export, DictConfig) and not _folder_name(export.get("subdir", "")):
        raise UserError(
            f"export.subdir={export.subdir} must stay inside the run folder (no '..', not "
            "absolute): e.g. export.subdir=export"
        )


def check_sweep(cfg: DictConfig) -> None:
    """Everything `saelab sweep` can check before the model loads."""
    apply(cfg, RUN_RULES + DATA_RULES)
    check_precision(cfg)
    check_fits(cfg.data.n_tokens * TOKEN_BYTES, f"data.n_tokens={cfg.data.n_tokens}")
    budget = ("a positive number of bytes", _positive_number)
    boolean = ("true or false", lambda v: isinstance(v, bool))
    apply(cfg, [("sweep.memory_budget", budget, "4e9"), ("sweep.match", boolean, "true"),
                ("sweep.match_tokens", NON_NEGATIVE_INT, "16384")])  # fmt: skip
    if cfg.sweep.match and "reconstruction" not in (cfg.evals or {}):
        raise UserError(
            "sweep.match=true pairs SAEs by the L0 the reconstruction plugin measures: keep it "
            "in evals, e.g. evals=[reconstruction,downstream]"
        )


def check_train(cfg: DictConfig) -> None:
    """Everything `saelab train` can check before the model loads."""
    apply(cfg, RUN_RULES + DATA_RULES + TRAIN_RULES)
    check_precision(cfg)
    check_fits(cfg.train.n_tokens * TOKEN_BYTES, f"train.n_tokens={cfg.train.n_tokens}")
    if cfg.train.n_tokens < cfg.train.batch_size:
        raise UserError(
            f"train.n_tokens={cfg.train.n_tokens} is less than one batch "
            f"(train.batch_size={cfg.train.batch_size} tokens)"
        )
    if "k" in cfg.recipe:  # a TopK recipe keeps recipe.k latents per token
        if cfg.recipe.k is None:
            raise UserError("recipe.k=null: a TopK recipe keeps k latents per token, e.g. 32")
        check_k(cfg.recipe.k, cfg.recipe.n_latents, key="recipe.k")
    check_recipe(cfg)
    if cfg.get("ckpt_path"):
        check_training_checkpoint(Path(cfg.ckpt_path))
    if cfg.train.activation_cache:
        check_writable_cache(Path(cfg.train.activation_cache))


def check_recipe(cfg: DictConfig) -> None:
    """The keys that only some recipes have (after `recipe.k` and `recipe.n_latents`)."""
    apply(cfg, RECIPE_RULES, present_only=True)
    recipe, n_latents = cfg.recipe, cfg.recipe.n_latents
    if recipe.get("target_l0") is not None and recipe.target_l0 > n_latents:
        raise UserError(
            f"recipe.target_l0={recipe.target_l0} must be null or in (0, recipe.n_latents="
            f"{n_latents}] (JumpReLU's mean latents per token): e.g. recipe.target_l0=32"
        )
    if "multiple" in recipe and recipe.k * recipe.multiple > n_latents:
        raise UserError(
            f"recipe.k={recipe.k} x recipe.multiple={recipe.multiple} must be at most "
            f"recipe.n_latents={n_latents} (Multi-TopK's wider code): e.g. recipe.multiple=4"
        )
    groups = recipe.get("group_sizes")
    if groups is not None:
        groups = list(groups) if OmegaConf.is_list(groups) else [groups]
        if not (all(_int(g) and g > 0 for g in groups) and sum(groups) == n_latents):
            raise UserError(
                f"recipe.group_sizes={groups} must be positive integers summing to "
                f"recipe.n_latents={n_latents} (Matryoshka's nested groups): e.g. "
                "recipe.group_sizes=null (n/16, n/16, n/8, n/4, n/2)"
            )


def check_writable_cache(directory: Path) -> None:
    """A complete cache only needs reading; otherwise it must be writable."""
    if not (directory / MANIFEST).is_file():
        check_writable(directory, "train.activation_cache")


def check_writable(directory: Path, key: str) -> None:
    """The nearest folder that exists at or above `directory` must be a directory in which a
    folder can be made (tried and removed: the permission bits alone pass e.g. /proc for
    root)."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".saelab-check-"))
            return
        except OSError as error:
            reason = f"{existing}: {error.strerror or first_line(error)}"
    raise UserError(f"{key}={directory} cannot be written: {reason}; choose a writable directory")
