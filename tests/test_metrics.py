"""Each metric against a value computed independently here (numpy / torch.nn.functional)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saelab.evals import Density, Downstream, Reconstruction
from saelab.evals.base import EvalBatch
from saelab.sae.autoencoder import Autoencoder
from tests.conftest import fed

D, N_LATENTS = 6, 20


def make_batch(seed: int, dense_latents: bool = False, vocab: int = 11) -> EvalBatch:
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 5
    tokens = torch.randint(0, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, 0] = False
    n = int(mask.sum())
    acts = torch.randn(n, D, generator=g) * 2 + 0.5
    recons = acts + 0.3 * torch.randn(n, D, generator=g)
    sae = Autoencoder.random(N_LATENTS, D, k=3, seed=seed)
    with torch.no_grad():
        latents, _ = sae.encode_sparse(acts)
    log_probs = [torch.randn(B, T, vocab, generator=g).log_softmax(-1) for _ in range(3)]
    return EvalBatch(
        tokens, mask, acts, recons, latents.to_dense() if dense_latents else latents, *log_probs
    )


def feed(plugin, batches):
    return fed(plugin, batches, Autoencoder(N_LATENTS, D, k=3))


def run(plugin, batches):
    return feed(plugin, batches).compute()


@pytest.mark.parametrize("dense_latents", [False, True])
def test_reconstruction(dense_latents):
    batches = [make_batch(s, dense_latents) for s in range(3)]
    out = run(Reconstruction(), batches)
    x = np.concatenate([b.acts.numpy() for b in batches]).astype(np.float64)
    xh = np.concatenate([b.recons.numpy() for b in batches]).astype(np.float64)
    lat = np.concatenate(
        [(b.latents.to_dense() if not dense_latents else b.latents).numpy() for b in batches]
    )
    err = ((xh - x) ** 2).sum(1)
    fvu = err.sum() / ((x - x.mean(0)) ** 2).sum()
    cos = (x * xh).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(xh, axis=1)
    assert out["reconstruction/nmse"] == pytest.approx((err / (x**2).sum(1)).mean(), rel=1e-9)
    assert out["reconstruction/fvu"] == pytest.approx(fvu, rel=1e-9)
    assert out["reconstruction/explained_variance"] == pytest.approx(1 - fvu, rel=1e-9)
    assert out["reconstruction/cosine"] == pytest.approx(cos.mean(), rel=1e-6)
    ratio = np.linalg.norm(xh, axis=1) / np.linalg.norm(x, axis=1)
    assert out["reconstruction/l2_ratio"] == pytest.approx(ratio.mean(), rel=1e-6)
    assert out["sparsity/l0"] == pytest.approx((lat != 0).sum(1).mean())
    assert out["sparsity/l1"] == pytest.approx(np.abs(lat).sum(1).mean(), rel=1e-6)


def test_fvu_uses_the_mean_not_zero():
    # activations far from zero with a small spread: variance around zero would hide the error
    batch = make_batch(0)
    batch.acts = batch.acts + 100.0
    batch.recons = batch.recons + 100.0
    out = run(Reconstruction(), [batch])
    assert out["reconstruction/fvu"] > 10 * out["reconstruction/nmse"]


def test_downstream():
    batches = [make_batch(s) for s in range(2)]
    out = run(Downstream(), batches)
    ce = {"clean": [], "sae": [], "ablated": []}
    kls = []
    for b in batches:
        where = b.mask[:, :-1]
        targets = b.tokens[:, 1:][where]
        picked = [
            lg[:, :-1][where].double()
            for lg in (b.log_probs, b.spliced_log_probs, b.ablated_log_probs)
        ]
        for name, lg in zip(ce, picked, strict=True):
            ce[name].append(F.cross_entropy(lg, targets, reduction="none"))
        kls.append(
            F.kl_div(
                F.log_softmax(picked[1], -1),
                F.log_softmax(picked[0], -1),
                log_target=True,
                reduction="none",
            ).sum(-1)
        )
    clean, sae, ablated = (torch.cat(v).mean().item() for v in ce.values())
    assert out["downstream/ce_clean"] == pytest.approx(clean, rel=1e-5)
    assert out["downstream/ce_sae"] == pytest.approx(sae, rel=1e-5)
    assert out["downstream/ce_ablated"] == pytest.approx(ablated, rel=1e-5)
    assert out["downstream/delta_ce"] == pytest.approx(sae - clean, rel=1e-4, abs=1e-6)
    recovered = (ablated - sae) / (ablated - clean)
    assert out["downstream/ce_loss_recovered"] == pytest.approx(recovered, rel=1e-4)
    assert out["downstream/kl"] == pytest.approx(torch.cat(kls).mean().item(), rel=1e-4)


def test_density():
    batches = [make_batch(s) for s in range(4)]
    out = run(Density(), batches)
    counts = np.zeros(N_LATENTS)
    n = 0
    for b in batches:
        dense = b.latents.to_dense().numpy()
        counts += (dense > 0).sum(0)
        n += len(dense)
    freq = counts / n
    assert np.allclose(out["density/frequencies"].numpy(), freq)
    assert out["density/dead_count"] == int((counts == 0).sum())
    assert out["density/dead_fraction"] == pytest.approx((counts == 0).mean())
    assert out["density/dense_fraction"] == pytest.approx((freq > 0.1).mean())
    assert out["density/log10_histogram"].sum() == (counts > 0).sum()


@pytest.mark.parametrize("plugin_cls", [Reconstruction, Downstream, Density])
def test_states_merge_like_ddp_ranks(plugin_cls):
    """Two ranks' states summed give the single-process result (what DDP sync does)."""
    batches = [make_batch(s) for s in range(4)]
    whole = run(plugin_cls(), batches)
    rank0, rank1 = plugin_cls(), plugin_cls()
    feed(rank0, batches[:2])
    feed(rank1, batches[2:])
    rank0.merge_state(rank1)
    merged = rank0.compute()
    for key, value in whole.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(merged[key], value), key
        else:
            assert merged[key] == pytest.approx(value, rel=1e-9), key
