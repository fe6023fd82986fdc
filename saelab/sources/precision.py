"""The numeric precision of the model's forwards (`precision=`): a speed/fidelity choice.

Only the language model's forwards change: `bf16` autocasts them (matmuls in bfloat16, layer
norms and softmaxes in fp32, as torch's autocast policy has it) and `tf32` lets CUDA round
fp32 matmul inputs to TF32. The SAE, the log-softmax and every metric stay in fp32, so the
drift a precision causes is the model's alone (`benchmarks/precision.py` measures it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from saelab.errors import UserError

# accepted names (Lightning's own as aliases) -> the precision
NAMES = {"32": "32", "32-true": "32", "tf32": "tf32", "bf16": "bf16", "bf16-mixed": "bf16"}


@dataclass(frozen=True)
class Precision:
    name: str = "32"

    @classmethod
    def parse(cls, value: object) -> Precision:
        name = NAMES.get(str(value))
        if name is None:
            raise UserError(
                f"precision={value} is not one of {', '.join(NAMES)}: e.g. precision=bf16 "
                "(README: Precision)"
            )
        return cls(name)

    def check(self, device: torch.device) -> None:
        """A precision the device cannot do is an error, never silently fp32."""
        if self.name == "tf32" and device.type != "cuda":
            raise UserError(
                f"precision=tf32 needs a CUDA device, and this run uses {device.type}: "
                "choose precision=32 or precision=bf16"
            )
        if self.name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(
                "precision=bf16 needs a GPU with bfloat16 support (Ampere or newer): "
                "choose precision=32 or precision=tf32"
            )

    @contextlib.contextmanager
    def forward(self, device: torch.device) -> Iterator[None]:
        """The context of one model forward on `device`."""
        if self.name == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        elif self.name == "tf32":
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32 = previous
        else:
            yield


def run_device(accelerator: str) -> torch.device:
    """The device a Lightning `trainer.accelerator` runs on ('auto': CUDA when present)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
