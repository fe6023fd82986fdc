"""What every task shares: its output directory and loggers (configs: `saelab.config`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from saelab.config import build


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory: `paths.output_dir` (Hydra's run directory under the CLI)."""
    return Path(cfg.paths.output_dir)


def logger(cfg: DictConfig) -> Any:
    """The configured Lightning logger (None for `logger=none`), given the resolved config."""
    built = build(cfg.logger) if cfg.get("logger") else None
    if built:
        built.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return built


def close_loggers() -> None:
    """Finish the W&B run, if one is open (multiruns need each job's run closed)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
