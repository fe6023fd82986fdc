"""Shared fixtures: small random models, checkpoints written in OpenAI's exact format, and a
viewer server with a real headless Chromium to drive it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

# A random GPT-2 small enough for unit tests: 2 layers, width 64 (MLP 256), vocab 512.
TINY_MODEL = dict(n_layers=2, d_model=64, n_heads=2, vocab_size=512)
TINY_OVERRIDES = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (.ci/run installs it)


def openai_state_dict(
    n_latents: int, d: int, k: int | None, seed: int = 0, activation_keys: bool = False
) -> dict:
    """A state dict laid out exactly as OpenAI's released `.pt` files (written by hand here)."""
    g = torch.Generator().manual_seed(seed)
    decoder = torch.randn(d, n_latents, generator=g)
    decoder /= decoder.norm(dim=0, keepdim=True)
    sd: dict = {
        "pre_bias": 0.1 * torch.randn(d, generator=g),
        "encoder.weight": decoder.T.clone() + 0.01 * torch.randn(n_latents, d, generator=g),
        "latent_bias": 0.01 * torch.randn(n_latents, generator=g),
        "decoder.weight": decoder,
        "stats_last_nonzero": torch.randint(0, 100, (n_latents,), generator=g),
        "latents_activation_frequency": torch.rand(n_latents, generator=g),
        "latents_mean_square": torch.rand(n_latents, generator=g),
        "activation": "ReLU" if k is None else "TopK",
        "activation_state_dict": (
            {} if k is None else OrderedDict([("k", k), ("postact_fn", "ReLU")])
        ),
    }
    if activation_keys and k is not None:
        sd["activation.k"] = k
        sd["activation.postact_fn"] = "ReLU"
    return sd


def openai_reference(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenAI's published forward (sparse_autoencoder/model.py), written out from its formulas:
    ReLU unless the file says TopK (then layer-normed inputs: unbiased std + 1e-5)."""
    topk = sd.get("activation", "ReLU") == "TopK"
    if topk:
        k = dict(sd.get("activation_state_dict") or {}).get("k", sd.get("activation.k"))
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        x = (x - mu) / (std + 1e-5)
    pre = (x - sd["pre_bias"]) @ sd["encoder.weight"].T + sd["latent_bias"]
    if topk:
        top = pre.topk(k, dim=-1)
        latents = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp_min(0))
    else:
        latents = pre.clamp_min(0)
    recons = latents @ sd["decoder.weight"].T + sd["pre_bias"]
    return latents, (recons * std + mu if topk else recons)


def write_openai_checkpoint(
    path: Path, n_latents: int, d: int, k: int | None = 8, **kwargs
) -> Path:
    torch.save(openai_state_dict(n_latents, d, k, **kwargs), path)
    return path


@pytest.fixture
def topk_checkpoint(tmp_path: Path) -> Path:
    """TopK SAE for the residual stream (width 64) of the tiny model."""
    return write_openai_checkpoint(tmp_path / "topk.pt", 256, TINY_MODEL["d_model"], k=8)


@pytest.fixture
def relu_mlp_checkpoint(tmp_path: Path) -> Path:
    """ReLU SAE for the MLP activations (width 4 * 64) of the tiny model."""
    return write_openai_checkpoint(tmp_path / "relu.pt", 512, 4 * TINY_MODEL["d_model"], k=None)


def fed(plugin, batches, sae):
    """`plugin` set up for `sae` alone and updated with each of `batches`: compute it next."""
    from saelab.evals.base import RunContext

    plugin.setup(RunContext.of_sae(sae))
    for batch in batches:
        plugin.update(batch)
    return plugin


@pytest.fixture(scope="session")
def tiny_model():
    from saelab.sources.models import random_gpt2

    return random_gpt2(seed=0, **TINY_MODEL)


@contextmanager
def serving(argv: list[str]) -> Iterator:
    """`saelab view ARGV` serving from a background thread."""
    from saelab.tasks.view import serve

    srv, _ = serve(argv)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser page on the test module's `server`; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.dialogs = [], []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    assert not page.errors, page.errors
    context.close()


def visit(page, server, hash: str):
    page.goto(server.url + hash)
    page.wait_for_selector(f'body[data-ready="{hash}"]')
    assert not page.query_selector("main .error"), page.inner_text("main")
