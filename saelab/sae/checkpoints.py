"""Find, download (once, atomically) and load SAE checkpoints: OpenAI's families, the bundled
zoo, or any file or directory in a supported format (`saelab.formats`), local, remote or on
the Hugging Face hub.

`load` is the one way to load a checkpoint. The `sae` config group builds a checkpoint
source (`Files`, `Release`, `Bundled`): what it covers (the places of a family; None for one
checkpoint, which may record its own place) and how to load the one at a place. Where an
SAE reads is decided by `saelab.sources.places.select`, in `locate` for every command.

Remote files (az://, gs://, https://) are fetched with blobfile into a cache directory under a
temporary name and renamed when complete, so an interrupted download never looks complete.
Hugging Face repositories go through `huggingface_hub` and its cache. Nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import blobfile as bf
from tqdm import tqdm

import saelab.zoo
from saelab import formats
from saelab.errors import OFFLINE_HINT, UserError, first_line
from saelab.formats.base import Checkpoint
from saelab.io import atomic_write
from saelab.sae import release
from saelab.sources.places import DEFAULT, Place, check_layers, select

REMOTE_SCHEMES = ("az://", "gs://", "https://", "http://")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saelab"


def load(
    path: str | None = None,
    repo_id: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    format: str = "auto",
    cache_dir: str | None = None,
    check_model: bool = True,
) -> Checkpoint:
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
            checkpoint = formats.read(local, format)
        except UserError as error:
            local.unlink(missing_ok=True)
            raise UserError(
                f"{error}; deleted the cached copy, the next run downloads it again"
            ) from None
        checkpoint.source, checkpoint.check_model = str(path), check_model
        return checkpoint
    else:
        root = Path(str(path).removeprefix("file://")).expanduser()
        source = str(root.resolve())
    local = root / subfolder if subfolder else root
    if not local.exists():
        raise UserError(f"SAE checkpoint not found: {local} (check sae.path= and sae.subfolder=)")
    checkpoint = formats.read(local, format)
    checkpoint.source = f"{source}/{subfolder}" if subfolder else source
    checkpoint.check_model = check_model
    return checkpoint


class Source:
    """Where the `sae` config's checkpoints come from (one option of the `sae` group)."""

    family: str | None = None
    what = "the SAE"

    def covers(self) -> list[Place] | None:
        """The places it has a checkpoint for; None: one checkpoint, placed where it records
        (or where asked)."""
        return None

    def load(self, place: Place | None = None) -> Checkpoint:
        """The checkpoint at `place`, one of `covers()` (None for a single checkpoint)."""
        raise NotImplementedError


@dataclass
class Files(Source):
    """One checkpoint: `load`'s arguments (`sae=auto`, `sae=file`, `sae=<format>`)."""

    path: str | None = None
    repo_id: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    format: str = "auto"
    cache_dir: str | None = None
    check_model: bool = True

    def load(self, place: Place | None = None) -> Checkpoint:
        return load(**asdict(self))


@dataclass
class Release(Source):
    """One of OpenAI's released GPT-2 small families (`family`: v1, v4, v5_32k or v5_128k)."""

    family: str
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.family not in release.FAMILIES:
            known = ", ".join(release.FAMILIES)
            raise UserError(f"unknown OpenAI SAE family {self.family!r}; one of {known}")
        self.what = f"OpenAI's {self.family} family"

    def covers(self) -> list[Place]:
        return release.FAMILIES[self.family].places()

    def load(self, place: Place | None = None) -> Checkpoint:
        url = release.FAMILIES[self.family].url(place.location, place.layer)
        checkpoint = load(path=url, cache_dir=self.cache_dir)
        checkpoint.family = self.family
        return checkpoint


@dataclass
class Bundled(Source):
    """An SAE family bundled in saelab/zoo (offline), chosen like OpenAI's by place; `variant`
    picks one SAE per place of a family that has several (the frontier's target L0s)."""

    model: str
    family: str
    variant: str | None = None

    def __post_init__(self) -> None:
        which = f" {self.variant}" if self.variant else ""
        self.what = f"the bundled {self.model} {self.family}{which} family"

    def covers(self) -> list[Place]:
        return saelab.zoo.sae_places(self.model, self.family, self.variant)

    def load(self, place: Place | None = None) -> Checkpoint:
        path = saelab.zoo.sae_path(self.model, self.family, place, self.variant)
        checkpoint = load(path=str(path))
        checkpoint.family = self.family
        return checkpoint


def places(
    source: Source, model: Any, layer: Any, location: Any, default: Place | None = DEFAULT
) -> list[tuple[Place, Checkpoint | None]]:
    """The places `layer`/`location` ask of `source` on `model`, each with its checkpoint where
    it had to be loaded to know its place (a single checkpoint), else None (load it later)."""
    check_layers(layer, model)
    covered = source.covers()
    if covered is None:
        checkpoint = source.load()
        checkpoint.check_model_name(model.name)
        found = select(layer, location, model.places(), checkpoint.place, default, source.what)
        return [(place, checkpoint) for place in found]
    in_model = set(model.places())
    covered = [place for place in covered if place in in_model]
    found = select(layer, location, covered, None, default, source.what)
    return [(place, None) for place in found]


def locate(source: Source, model: Any, layer: Any, location: Any) -> tuple[Place, Checkpoint]:
    """The one SAE that `layer`/`location` ask for (eval, export, view), loaded and checked
    against the model."""
    found = places(source, model, layer, location)
    if len(found) != 1:
        raise UserError(
            f"layer={layer} location={location} names {len(found)} SAEs; this command "
            "evaluates one (saelab sweep evaluates many in one pass)"
        )
    place, checkpoint = found[0]
    if checkpoint is None:
        checkpoint = source.load(place)
        checkpoint.check_model_name(model.name)
    return place, checkpoint


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
        raise UserError(
            f"could not download {repo_id} from the Hugging Face hub ({first_line(error, 160)}); "
            f"the cache is {cache / 'huggingface'}; {OFFLINE_HINT}"
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
