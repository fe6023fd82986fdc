"""Ablation sparsity (saelab/evals/ablation_sparsity.py): the formula on hand-made vectors, and
every ablation against a brute force with plain Hugging Face module hooks (one full forward
per ablation, logits rather than log-probabilities)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saelab.evals.ablation_sparsity import AblationSparsity, effects, sparsity
from saelab.evals.base import RunContext
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.places import Place


def test_formula_on_hand_made_vectors():
    one = torch.zeros(3, 50)
    one[:, 7] = 2.5
    assert torch.allclose(sparsity(one), torch.full((3,), 1 / 50))
    assert torch.allclose(sparsity(torch.full((2, 40), -0.3)), torch.ones(2))
    half = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # (2 / sqrt 2)^2 / 4
    assert torch.allclose(sparsity(half), torch.tensor([0.5]))


def brute_force(hf, layer: int, tokens: torch.Tensor, t: int, value: torch.Tensor, T: int):
    """The sparsity by hand: full forwards, value put at block `layer`'s output at `t`."""

    def put(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[0, t] = value
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    with torch.no_grad():
        clean = hf(tokens[None]).logits[0].double().numpy()
        handle = hf.transformer.h[layer].register_forward_hook(put)
        try:
            ablated = hf(tokens[None]).logits[0].double().numpy()
        finally:
            handle.remove()
    end = min(len(tokens), t + T)
    diff = ablated[t:end] - clean[t:end]
    d = (diff - np.median(diff, axis=1, keepdims=True)).ravel()
    return (np.abs(d).sum() / np.sqrt((d**2).sum())) ** 2 / d.size


@pytest.mark.parametrize("t", [3, 14])  # 14: the context ends before 16 positions
def test_effects_match_hugging_face_hooks(tiny_model, t):
    layer, T = 0, 16
    sae = Autoencoder.random(128, 64, k=8, seed=1)
    plugin = AblationSparsity(n_following=T)
    plugin.setup(RunContext.of_sae(sae, tiny_model, Place("resid_post_mlp", layer)))
    tokens = torch.randint(0, 511, (20,), generator=torch.Generator().manual_seed(0))
    hf = tiny_model.bridge.original_model
    with torch.no_grad():
        x = hf(tokens[None], output_hidden_states=True).hidden_states[layer + 1][0, t]
        z, info = sae.encode(x[None])
    latent = z[0].nonzero().squeeze(1)
    act = z[0, latent]
    channels = torch.tensor([0, 5, 63])
    got = effects(plugin, tokens, t, x, latent, act, channels)
    want = []
    for i in latent.tolist():  # the latent's share: the reconstruction with and without it
        without = z.clone()
        without[0, i] = 0
        share = (sae.decode(z, info) - sae.decode(without, info))[0]
        want.append(brute_force(hf, layer, tokens, t, x - share, T))
    for c in channels.tolist():
        value = x.clone()
        value[c] = 0
        want.append(brute_force(hf, layer, tokens, t, value, T))
    assert got.double().numpy() == pytest.approx(np.array(want), rel=2e-3)


def test_an_export_of_the_same_pass_carries_the_per_latent_means(tmp_path):
    """`saelab eval evals=[ablation_sparsity] export=true`: latents.json and each latent's record
    hold the means the plugin wrote to ablation_sparsity.json (null / absent: never sampled)."""
    import gzip
    import json

    from tests.test_cli import saelab

    out = tmp_path / "run"
    args = ("eval", "experiment=tiny", "evals=[ablation_sparsity]", "export=true",
            "data.n_tokens=512", "data.batch_size=4", f"hydra.run.dir={out}")  # fmt: skip
    result = saelab(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    means = json.loads((out / "ablation_sparsity.json").read_text())["per_latent"]
    assert sum(m is not None for m in means) > 0
    export = out / "export"
    assert json.loads((export / "latents.json").read_text())["ablation_sparsity"] == means
    for latent in (i for i, m in enumerate(means) if m is not None):
        path = export / "latents" / f"{latent}.json.gz"
        assert json.loads(gzip.decompress(path.read_bytes()))["ablation_sparsity"] == means[latent]
    never = means.index(None)
    record = json.loads(gzip.decompress((export / "latents" / f"{never}.json.gz").read_bytes()))
    assert "ablation_sparsity" not in record
