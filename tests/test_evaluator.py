"""One evaluator for many SAEs: fused results equal separate runs, and forwards are shared."""

from __future__ import annotations

import pytest
import torch

from saelab.evals import Density, Downstream, Reconstruction
from saelab.evals.base import RunContext
from saelab.evals.evaluator import BatchEvaluator, Probe, compute_all
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.places import Place
from tests.conftest import TINY_MODEL

PLACES = [  # (location, layer, k): two SAEs share the layer-1 resid_post_mlp hook
    ("resid_post_mlp", 1, 8),
    ("resid_post_mlp", 1, None),
    ("resid_post_attn", 0, 4),
    ("mlp_post_act", 1, 8),
    ("resid_delta_attn", 1, 16),
]


def probes(model) -> list[Probe]:
    out = []
    for i, (location, layer, k) in enumerate(PLACES):
        place = Place(location, layer)
        sae = Autoencoder.random(128, model.width(place.hook), k=k, seed=i)
        with torch.no_grad():
            sae.latent_bias.fill_(0.1)  # a ReLU SAE with some latents firing
        plugins = {"r": Reconstruction(), "d": Downstream(), "n": Density()}
        run = RunContext.of_sae(sae, model, place)
        for plugin in plugins.values():
            plugin.setup(run)
        out.append(Probe(run, plugins))
    return out


def batches():
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        tokens = torch.randint(0, TINY_MODEL["vocab_size"], (3, 10), generator=g)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        yield tokens, mask


def test_fused_equals_separate(tiny_model):
    fused, separate = probes(tiny_model), probes(tiny_model)
    evaluator = BatchEvaluator(tiny_model, fused)
    for tokens, mask in batches():
        evaluator(tokens, mask)
        for probe in separate:
            BatchEvaluator(tiny_model, [probe])(tokens, mask)
    for one, alone in zip(fused, separate, strict=True):
        got, want = compute_all(one.plugins), compute_all(alone.plugins)
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(got[key], value)
            else:
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (one.hook, key)


def test_one_clean_forward_and_one_ablation_per_hook(tiny_model):
    """Block 0 runs once per batch (the clean pass); every later pass starts at its block."""
    calls = []
    handle = tiny_model.bridge.blocks[0].register_forward_pre_hook(lambda m, a: calls.append(0))
    all_probes = probes(tiny_model)
    try:
        BatchEvaluator(tiny_model, all_probes)(*next(batches()))
    finally:
        handle.remove()
    # the clean pass, then the splice and ablation at the layer-0 hook (resid_post_attn)
    assert len(calls) == 3
