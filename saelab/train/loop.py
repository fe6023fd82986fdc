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
from saelab.errors import UserError
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
        return str(max(saved, key=lambda path: path.stat().st_mtime_ns))
    return None
