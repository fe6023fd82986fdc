"""The Lightning pieces around the training module: the data module over the activation
stream, atomic checkpoint writes, and which checkpoint a resumed run starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from saelab.data.activations import BufferedStream
from saelab.data.tokens import TokenDataModule
from saelab.errors import UserError, first_line
from saelab.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temp file and renamed: never a half-written `.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


class TrainData(L.LightningDataModule):
    """Training activations from a stream that resumes at the trainer's step; validation
    token contexts held out from the same pool."""

    def __init__(self, stream: BufferedStream, val: TokenDataModule) -> None:
        super().__init__()
        self.stream, self.val = stream, val

    def train_dataloader(self) -> BufferedStream:
        self.stream.device = self.trainer.lightning_module.device
        self.stream.start_batch = self.trainer.global_step
        return self.stream

    def val_dataloader(self) -> DataLoader:
        return self.val.test_dataloader()


def resume_from(checkpoints: Path, ckpt_path: str | None, resume: bool) -> str | None:
    """The checkpoint to resume from: `ckpt_path` if given, else with `resume` the newest in
    the run's `checkpoints` folder."""
    if ckpt_path:  # checked by check_train
        return str(ckpt_path)
    if resume:
        # the newest file: a kill between the periodic checkpoint and last.ckpt leaves the
        # periodic one newer (both are written atomically)
        saved = list(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
        if not saved:
            raise UserError(
                f"resume=true but there is no {checkpoints / 'last.ckpt'}: pass the run_name= "
                "of the run to resume, or ckpt_path=<file>"
            )
        newest = max(saved, key=lambda path: path.stat().st_mtime_ns)
        check_training_checkpoint(newest)  # a damaged file: one line, not a resumed mess
        return str(newest)
    return None


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
