"""Find, download (once, atomically) and load SAE checkpoints: OpenAI's families or any file.

Remote files (az://, gs://, https://) are fetched with blobfile into a cache directory under a
temporary name and renamed when complete, so an interrupted download never looks complete.
Checkpoints load with `torch.load(weights_only=True)`: code is never unpickled.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import blobfile as bf
import torch
from tqdm import tqdm

import saelab.zoo
from saelab import paths
from saelab.autoencoder import Autoencoder
from saelab.errors import UserError, first_line
from saelab.formats import load_saelab
from saelab.io import atomic_write

REMOTE_SCHEMES = ("az://", "gs://", "https://", "http://")
OFFLINE_HINT = (
    "offline? pass a local file with sae=file sae.path=<file>, or run fully offline with "
    "model=random_gpt2 (see the README)"
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saelab"


@dataclass
class LoadedSAE:
    """An autoencoder plus where it came from, for the results' provenance."""

    sae: Autoencoder
    source: str
    local_path: str
    sha256: str

    def provenance(self) -> dict[str, str | int | None]:
        return {
            "sae_source": self.source,
            "sae_sha256": self.sha256,
            "sae_activation": self.sae.activation_name,
            "sae_k": self.sae.k,
            "sae_n_latents": self.sae.n_latents,
        }


def openai(family: str, location: str, layer: int, cache_dir: str | None = None) -> LoadedSAE:
    """One of OpenAI's released GPT-2 small SAEs (`family` is v1, v4, v5_32k or v5_128k)."""
    if family not in paths.FAMILIES:
        raise UserError(f"unknown OpenAI SAE family {family!r}; one of {', '.join(paths.FAMILIES)}")
    return from_path(paths.FAMILIES[family].url(location, layer), cache_dir)


def zoo(model: str, family: str, location: str, layer: int) -> LoadedSAE:
    """An SAE bundled in saelab/zoo (offline), chosen like OpenAI's by location and layer."""
    return from_path(str(saelab.zoo.sae_path(model, family, location, layer)))


def from_path(path: str, cache_dir: str | None = None) -> LoadedSAE:
    """A checkpoint in OpenAI's format at a local path or any blobfile URL."""
    if path in (None, "", "???"):
        raise UserError("sae=file needs a checkpoint: add sae.path=<local file or URL>")
    path = str(path)
    if path.startswith(REMOTE_SCHEMES):
        local = cached_download(path, Path(cache_dir) if cache_dir else default_cache_dir())
        try:
            return LoadedSAE(load_autoencoder(local), path, str(local), sha256(local))
        except UserError as error:
            local.unlink(missing_ok=True)
            raise UserError(
                f"{error}; deleted the cached copy, the next run downloads it again"
            ) from None
    local = Path(path.removeprefix("file://")).expanduser()
    if not local.is_file():
        raise UserError(f"SAE checkpoint not found: {local} (check sae.path=)")
    return LoadedSAE(load_autoencoder(local), str(local.resolve()), str(local), sha256(local))


def cache_path(url: str, cache_dir: Path) -> Path:
    scheme, rest = url.split("://", 1)
    return cache_dir / "checkpoints" / scheme / rest


def cached_download(url: str, cache_dir: Path, retry_limit: int = 3) -> Path:
    """Download `url` into the cache unless it is already there; return the local path."""
    target = cache_path(url, cache_dir)
    if target.is_file():
        return target
    ctx = bf.create_context(retry_limit=retry_limit, log_callback=lambda _msg: None)

    def download(dst: IO[bytes]) -> None:
        size = ctx.stat(url).size
        with (
            ctx.BlobFile(url, "rb") as src,
            tqdm(total=size, unit="B", unit_scale=True, desc=f"download {url}") as bar,
        ):
            while chunk := src.read(1 << 22):
                dst.write(chunk)
                bar.update(len(chunk))

    try:
        atomic_write(target, download)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {url}") from None
    except (bf.Error, OSError) as error:
        reason = str(error).split(", request=")[0].removeprefix("message=")
        if "Failed to resolve" in reason or "Name or service not known" in reason:
            reason = "cannot resolve the host: no network?"
        raise UserError(
            f"could not download {url} ({reason[:160]}); the cache is {cache_dir}; {OFFLINE_HINT}"
        ) from None
    return target


def load_autoencoder(path: str | Path) -> Autoencoder:
    """Load an OpenAI-format checkpoint (local path or URL) with `weights_only=True`, or
    saelab's own `.safetensors` + `.json` pair. Non-finite weights are refused here: they would
    only turn every metric into NaN."""
    sae = load_saelab(Path(path)) if str(path).endswith(".safetensors") else load_openai(path)
    for name, tensor in sae.named_parameters():
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(
                f"{path} has non-finite weights ({bad} of {tensor.numel()} values of {name} are "
                "NaN or inf: a diverged or damaged SAE); use another checkpoint"
            )
    return sae


def load_openai(path: str | Path) -> Autoencoder:
    """A `torch.save`d state dict in OpenAI's layout."""
    try:
        with bf.BlobFile(str(path), "rb") as f:
            state_dict = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) and "GLOBAL" in str(error):
            raise UserError(
                f"{path} needs arbitrary unpickling, which saelab refuses (it loads checkpoints "
                "with weights_only=True); re-save it as a plain dict of tensors"
            ) from None
        raise UserError(f"{path} is not a torch checkpoint (corrupt or wrong file)") from None
    except Exception as error:  # a damaged file fails in many ways inside torch.load
        raise UserError(f"{path} is truncated or corrupt ({first_line(error)})") from None
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} holds a {type(state_dict).__name__}, not an SAE state dict")
    try:
        return Autoencoder.from_state_dict(state_dict)
    except RuntimeError as error:  # shape mismatches reported by load_state_dict
        raise UserError(f"{path} is not a consistent SAE checkpoint: {error}") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
