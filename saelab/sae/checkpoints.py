"""Find, download (once, atomically) and load SAE checkpoints: OpenAI's families or any file
or directory in a supported format (`saelab.formats`), local, remote or on the Hugging Face hub.

Remote files (az://, gs://, https://) are fetched with blobfile into a cache directory under a
temporary name and renamed when complete, so an interrupted download never looks complete.
Hugging Face repositories go through `huggingface_hub` and its cache. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import blobfile as bf
from tqdm import tqdm

import saelab.zoo
from saelab import formats
from saelab.errors import OFFLINE_HINT, UserError
from saelab.io import atomic_write
from saelab.sae import release
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.hooks import location_of

REMOTE_SCHEMES = ("az://", "gs://", "https://", "http://")
# Where an SAE reads when neither the config nor the checkpoint says: OpenAI's README example.
DEFAULT_LOCATION, DEFAULT_LAYER = "resid_delta_mlp", 6
MODEL_ALIASES = {"gpt2-small": "gpt2"}  # TransformerLens's name for GPT-2 small


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
    format: str = "openai"
    hook: str | None = None  # recorded by the checkpoint, where its format does
    model_name: str | None = None
    check_model: bool = True

    def provenance(self) -> dict[str, str | int | None]:
        return {
            "sae_source": self.source,
            "sae_format": self.format,
            "sae_sha256": self.sha256,
            "sae_activation": self.sae.activation_name,
            "sae_k": self.sae.k,
            "sae_n_latents": self.sae.n_latents,
        }

    def place(self, model: Any, location: str | None, layer: int | None) -> tuple[str, int]:
        """Where the SAE reads: the hook its checkpoint records (the config may omit location
        and layer, and must agree where it gives them), else the config's, else the default."""
        trained_on = MODEL_ALIASES.get(self.model_name, self.model_name)
        if self.check_model and trained_on and trained_on != model.name:
            raise UserError(
                f"the SAE was trained on {self.model_name!r} but the model is {model.name!r}: "
                "choose the matching model=, or add sae.check_model=false to evaluate it anyway"
            )
        if self.hook is None:
            return location or DEFAULT_LOCATION, DEFAULT_LAYER if layer is None else layer
        recorded = location_of(self.hook)
        given = (location or recorded[0], recorded[1] if layer is None else layer)
        if given != recorded:
            raise UserError(
                f"the SAE was trained at {self.hook} (location={recorded[0]} layer={recorded[1]}) "
                f"but location={given[0]} layer={given[1]} was asked for: omit them or match it"
            )
        return recorded


def openai(
    family: str, location: str | None, layer: int | None, cache_dir: str | None = None
) -> LoadedSAE:
    """One of OpenAI's released GPT-2 small SAEs (`family` is v1, v4, v5_32k or v5_128k)."""
    if family not in release.FAMILIES:
        known = ", ".join(release.FAMILIES)
        raise UserError(f"unknown OpenAI SAE family {family!r}; one of {known}")
    location = location or DEFAULT_LOCATION
    layer = DEFAULT_LAYER if layer is None else layer
    return from_path(release.FAMILIES[family].url(location, layer), cache_dir)


def bundled(model: str, family: str, location: str | None, layer: int | None) -> LoadedSAE:
    """An SAE bundled in saelab/zoo (offline), chosen like OpenAI's by location and layer."""
    if location is None or layer is None:
        raise UserError(f"sae={model}_{family} needs location= and layer=")
    return from_path(str(saelab.zoo.sae_path(model, family, location, layer)))


def from_path(path: str, cache_dir: str | None = None) -> LoadedSAE:
    """A checkpoint in any supported format at a local path or any blobfile URL."""
    return load(path=path, cache_dir=cache_dir)


def load(
    path: str | None = None,
    repo_id: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    format: str = "auto",
    cache_dir: str | None = None,
    check_model: bool = True,
) -> LoadedSAE:
    """An SAE from a file or directory (`path`: local or a blobfile URL) or a Hugging Face repo
    (`repo_id`, optional `revision`); `subfolder` picks a directory inside either (e.g. one
    hook of a sparsify run). `format` is detected unless given."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if repo_id:
        root, source = hf_snapshot(repo_id, subfolder, revision, cache), f"hf://{repo_id}"
    elif path in (None, "", "???"):
        raise UserError(
            "the SAE needs a checkpoint: add sae.path=<file, directory or URL> "
            "(or sae.repo_id=<Hugging Face repo>)"
        )
    elif str(path).startswith(REMOTE_SCHEMES):
        local = cached_download(str(path), cache)
        try:
            return loaded_from(local, str(path), format, check_model)
        except UserError as error:
            local.unlink(missing_ok=True)
            raise UserError(
                f"{error}; deleted the cached copy, the next run downloads it again"
            ) from None
    else:
        root = Path(str(path).removeprefix("file://")).expanduser()
        source = str(root.resolve())
    local = root / subfolder if subfolder else root
    if not local.exists():
        raise UserError(f"SAE checkpoint not found: {local} (check sae.path= and sae.subfolder=)")
    return loaded_from(local, f"{source}/{subfolder}" if subfolder else source, format, check_model)


def loaded_from(local: Path, source: str, format: str, check_model: bool) -> LoadedSAE:
    checkpoint = formats.load(local, format)
    return LoadedSAE(
        checkpoint.sae, source, str(local), sha256(checkpoint.weights), checkpoint.format,
        checkpoint.hook, checkpoint.model_name, check_model,
    )


def hf_snapshot(repo_id: str, subfolder: str | None, revision: str | None, cache: Path) -> Path:
    """The repo's files (only `subfolder`'s, if given) through the Hugging Face cache: the
    network is asked only for what is not cached there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [f"{subfolder.strip('/')}/*"] if subfolder else None
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache / "huggingface"
            )
        )
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise UserError(
            f"no Hugging Face repo {repo_id!r}{f' at revision {revision!r}' if revision else ''} "
            "(check sae.repo_id=; private repos need `huggingface-cli login`)"
        ) from None
    except (LocalEntryNotFoundError, OSError) as error:  # requests' errors are OSErrors
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise UserError(
            f"could not download {repo_id} from the Hugging Face hub ({reason}); the cache is "
            f"{cache / 'huggingface'}; {OFFLINE_HINT}"
        ) from None


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


def load_autoencoder(path: str | Path, format: str = "auto") -> Autoencoder:
    """The autoencoder in a local file or directory, in `format` or the detected one."""
    return formats.load(Path(path), format).sae


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
