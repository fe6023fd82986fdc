from pathlib import Path
from types import SimpleNamespace

import pytest

import saelab
from saelab.errors import UserError
from saelab.io import sha256
from saelab.sae import checkpoints
from saelab.sources.places import every_place
from tests.conftest import write_openai_checkpoint

URL = "az://bucket/sae/6.pt"


def test_openai_paths_match_their_release():
    root = "az://openaipublic/sparse-autoencoder/gpt2-small"
    assert saelab.paths.v1("mlp_post_act", 0) == f"{root}/mlp_post_act/autoencoders/0.pt"
    assert saelab.paths.v4("resid_delta_mlp", 3) == f"{root}/resid_delta_mlp_v4/autoencoders/3.pt"
    assert (
        saelab.paths.v5_32k("resid_delta_mlp", 6)
        == f"{root}/resid_delta_mlp_v5_32k/autoencoders/6.pt"
    )
    assert (
        saelab.paths.v5_128k("resid_post_attn", 11)
        == f"{root}/resid_post_attn_v5_128k/autoencoders/11.pt"
    )


@pytest.mark.parametrize(
    ("family", "location", "layer", "message"),
    [
        ("v5_32k", "mlp_post_act", 0, "v5_32k family has no SAE at mlp_post_act/0"),
        ("v1", "resid_post_attn", 0, "v1 family has no SAE at resid_post_attn/0"),
        ("v4", "resid_delta_mlp", 12, "layer=12 is out of range: gpt2 has layers 0-11"),
        ("v6", "resid_delta_mlp", 0, "unknown OpenAI SAE family"),
    ],
)
def test_family_coverage_errors(family, location, layer, message):
    """Checked before anything downloads: the family's places against the model's."""
    gpt2_small = SimpleNamespace(name="gpt2", n_layers=12, places=lambda: every_place(12))
    with pytest.raises(UserError, match=message):
        checkpoints.locate(checkpoints.Release(family), gpt2_small, layer, location)


class FakeRemote:
    """Stands in for blobfile's context: serves `files` (URL -> local path), maybe failing."""

    def __init__(self, files: dict[str, Path], fail_after: int | None = None):
        self.files, self.fail_after, self.opened = files, fail_after, 0

    def stat(self, url):
        if url not in self.files:
            raise FileNotFoundError(url)
        return type("Stat", (), {"size": self.files[url].stat().st_size})

    def BlobFile(self, url, mode):
        self.opened += 1
        data = self.files[url].read_bytes()
        fail_after = self.fail_after

        class Reader:
            def __init__(self):
                self.pos = 0

            def read(self, n):
                if fail_after is not None and self.pos >= fail_after:
                    raise OSError("connection reset")
                chunk = data[self.pos : self.pos + min(n, 1024)]
                self.pos += len(chunk)
                return chunk

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Reader()


def use_remote(monkeypatch, remote):
    monkeypatch.setattr(checkpoints.bf, "create_context", lambda **kw: remote)


def test_download_once_then_cached(tmp_path, monkeypatch):
    source = write_openai_checkpoint(tmp_path / "src.pt", 64, 16, k=4)
    remote = FakeRemote({URL: source})
    use_remote(monkeypatch, remote)
    cache = tmp_path / "cache"
    first = checkpoints.load(path=URL, cache_dir=str(cache))
    second = checkpoints.load(path=URL, cache_dir=str(cache))
    assert remote.opened == 1
    assert Path(first.weights) == cache / "checkpoints" / "az" / "bucket" / "sae" / "6.pt"
    assert first.sha256 == second.sha256 == sha256(source)
    assert first.source == URL and first.sae.k == 4


def test_interrupted_download_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    source = write_openai_checkpoint(tmp_path / "src.pt", 64, 16, k=4)
    use_remote(monkeypatch, FakeRemote({URL: source}, fail_after=2048))
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="could not download .*connection reset"):
        checkpoints.load(path=URL, cache_dir=str(cache))
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_corrupt_cached_download_is_deleted(tmp_path, monkeypatch):
    source = write_openai_checkpoint(tmp_path / "src.pt", 64, 16, k=4)
    cache = tmp_path / "cache"
    cached = checkpoints.cache_path(URL, cache)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(source.read_bytes()[:1000])  # e.g. a disk filled up long ago
    remote = FakeRemote({URL: source})
    use_remote(monkeypatch, remote)
    with pytest.raises(UserError, match="truncated or corrupt.*deleted the cached copy"):
        checkpoints.load(path=URL, cache_dir=str(cache))
    assert not cached.exists() and remote.opened == 0
    assert checkpoints.load(path=URL, cache_dir=str(cache)).sae.k == 4  # fetched again
    assert remote.opened == 1


def test_missing_remote_and_local_files(tmp_path, monkeypatch):
    use_remote(monkeypatch, FakeRemote({}))
    with pytest.raises(UserError, match="no checkpoint at az://bucket/sae/6.pt"):
        checkpoints.load(path=URL, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="SAE checkpoint not found"):
        checkpoints.load(path=str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="sae.path"):
        checkpoints.load(path="???")


def test_unreachable_host_names_the_cache_and_offline_options(tmp_path):
    # no such storage account: fails the same way with or without a network
    url = "az://saelab-no-such-account-0/sparse-autoencoder/6.pt"
    with pytest.raises(UserError) as error:
        checkpoints.cached_download(url, tmp_path, retry_limit=1)
    message = str(error.value)
    assert "could not download" in message and str(tmp_path) in message
    assert "sae=file" in message and "random_gpt2" in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
