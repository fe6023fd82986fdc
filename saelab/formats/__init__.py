"""SAE checkpoint formats: a registry as data, one module per format.

Each format module has `NAME`, `looks_like(path)` (a cheap look at the layout), and
`load(path) -> Checkpoint` mapping the file onto the one `Autoencoder`; those that can be
written have `save(sae, out, metadata)`. `read` detects or checks the format, then validates
what every format shares, so plugins, export, viewer and sweeps never see the difference.
Users load checkpoints through `saelab.sae.checkpoints.load` (any path, URL or hub repo),
which reads the local copy here.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from saelab.errors import UserError
from saelab.formats import gemmascope, openai, saelab, saelens, sparsify
from saelab.formats.base import Checkpoint, validate
from saelab.sae.autoencoder import Autoencoder

# in detection order: OpenAI's (any torch file) last
FORMATS: dict[str, ModuleType] = {
    "saelab": saelab,
    "saelens": saelens,
    "sparsify": sparsify,
    "gemmascope": gemmascope,
    "openai": openai,
}
WRITABLE = ("saelab", "openai", "saelens")


def detect(path: Path) -> str | None:
    return next((name for name, fmt in FORMATS.items() if fmt.looks_like(path)), None)


def read(path: Path, format: str = "auto") -> Checkpoint:
    """The checkpoint at a local `path` (file or directory) in `format`, or the detected one."""
    path = Path(path)
    if format == "auto":
        found = detect(path)
        if found is None:
            raise UserError(
                f"cannot tell the SAE format of {path}: expected an OpenAI .pt, a saelab "
                "sae.safetensors + sae.json, a SAELens or sparsify directory, or a Gemma Scope "
                "params.npz"
            )
        format = found
    elif format not in FORMATS:
        raise UserError(f"unknown SAE format {format!r}; one of auto, {', '.join(FORMATS)}")
    elif not FORMATS[format].looks_like(path):
        other = detect(path)
        why = (
            f"it looks like {FORMATS[other].NAME}'s: use sae={other}"
            if other
            else ("its files are missing or misnamed")
        )
        raise UserError(f"{path} is not in {FORMATS[format].NAME}'s format; {why}")
    checkpoint = FORMATS[format].load(path)
    validate(checkpoint.sae, path)
    return checkpoint


def save(
    sae: Autoencoder, out: Path, format: str, metadata: dict[str, Any] | None = None
) -> list[Path]:
    """Write `sae` in `format` (a directory, or OpenAI's single `.pt` file), atomically per file;
    a clear error where the format cannot express it."""
    if format not in WRITABLE:
        raise UserError(f"cannot write {format!r}; one of {', '.join(WRITABLE)}")
    return FORMATS[format].save(sae, Path(out), metadata or {})


def save_sae(sae: Autoencoder, directory: Path, metadata: dict[str, Any]) -> list[Path]:
    """A trained SAE: `sae.safetensors` + `sae.json`, and `sae.pt` in OpenAI's format where
    it can express the SAE."""
    written = saelab.save(sae, directory, metadata)
    if openai.can_express(sae):
        written += openai.save(sae, directory / "sae.pt")
    return written


__all__ = ["FORMATS", "Checkpoint", "detect", "read", "save", "save_sae"]
