"""What every task shares: its output directory and loggers (configs: `saelab.config`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from saelab.config import build
from saelab.sources.models import ModelSource
from saelab.sources.precision import Precision


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory: `paths.output_dir` (Hydra's run directory under the CLI)."""
    return Path(cfg.paths.output_dir)


def model_source(cfg: DictConfig) -> ModelSource:
    """The configured model, its forwards at `precision=` (checked by `tasks.checks`)."""
    model: ModelSource = build(cfg.model)
    model.precision = Precision.parse(cfg.precision)
    return model


def logger(cfg: DictConfig) -> Any:
    """The configured Lightning logger (None for `logger=none`), given the resolved config."""
    built = build(cfg.logger) if cfg.get("logger") else None
    if built:
        built.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return built


def quiet_console(verbose: bool) -> None:
    """saelab's table, the results path and one progress bar per phase on the console; the
    libraries' notes (Lightning's device lines and tips, W&B's run summary) go to the run's
    log file (Hydra's `<command>.log`) only, unless `verbose=true`."""
    if verbose:
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" on every model load
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        library = logging.getLogger(name)  # Lightning writes to its own stderr handler
        for handler in list(library.handlers):
            if type(handler) is logging.StreamHandler:
                library.removeHandler(handler)
        library.propagate = True  # ... now to the root logger's handlers: Hydra's file
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console, not the log file
            handler.setLevel(logging.WARNING)


def close_loggers() -> None:
    """Finish the W&B run, if one is open (multiruns need each job's run closed)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
