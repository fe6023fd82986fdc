"""OpenAI's public viewer data (`az://openaipublic/sparse-autoencoder/viewer/...`), fetched
once through blobfile and kept in the cache directory, so their features browse locally and
stay browsable with the network off afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path

from saelab.io import atomic_write

VIEWER_ROOT = "az://openaipublic/sparse-autoencoder/viewer/"
SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # no "..", no separators, no escapes


class RemoteError(Exception):
    """The remote file could not be fetched (no network, no such feature, not JSON)."""


def fetch(url: str) -> bytes:
    """The one network call; tests replace it."""
    import blobfile as bf

    with bf.BlobFile(url, "rb") as f:
        return f.read()


def cached_viewer_file(relative: str, cache_dir: Path) -> bytes:
    """`relative` like `gpt2-small/v5_32k/layer_8/resid_post_mlp/atoms/17.json`."""
    parts = relative.split("/")
    if not relative.endswith(".json") or not all(SEGMENT.match(p) for p in parts):
        raise ValueError(f"not an OpenAI viewer file path: {relative!r}")
    local = cache_dir.joinpath("viewer", *parts)
    if local.is_file():
        return local.read_bytes()
    url = VIEWER_ROOT + relative
    try:
        data = fetch(url)
    except Exception as error:  # blobfile raises many kinds; the page shows the reason
        raise RemoteError(f"could not fetch {url}: {str(error)[:200]} (no network?)") from None
    try:
        json.loads(data)
    except ValueError:
        raise RemoteError(f"{url} is not JSON") from None
    atomic_write(local, lambda f: f.write(data))
    return data
