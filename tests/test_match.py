"""`saelab match`: a permuted copy is recovered exactly; a split latent is counted; the chunked
products equal the whole product computed here with numpy; activation correlations equal
numpy's."""

import json

import numpy as np
import pytest
import torch

from saelab.cli import main
from saelab.formats import save
from saelab.sae.autoencoder import Autoencoder
from saelab.sae.match import correlations, match

N, D = 96, 64


def permuted(sae: Autoencoder, perm: torch.Tensor) -> Autoencoder:
    """The same SAE with its latents in the order `perm` (latent j of the copy is `perm[j]`)."""
    copy = Autoencoder(sae.n_latents, sae.n_inputs, k=sae.k)
    with torch.no_grad():
        copy.pre_bias.copy_(sae.pre_bias)
        for name in ("W_enc", "latent_bias", "W_dec"):
            getattr(copy, name).copy_(getattr(sae, name)[perm])
    return copy


def test_a_permuted_copy_is_recovered_with_cosine_one(tmp_path, capsys):
    sae = Autoencoder.random(N, D, k=8, seed=1)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(2))
    save(sae, tmp_path / "a", "saelab")
    save(permuted(sae, perm), tmp_path / "b.pt", "openai")  # any two formats
    out = tmp_path / "matches.json"
    main(["match", str(tmp_path / "a"), str(tmp_path / "b.pt"), "--out", str(out)])
    found = json.loads(out.read_text())
    inverse = torch.argsort(perm)  # A's latent i is the copy's latent j with perm[j] = i
    assert found["best"] == inverse.tolist()
    assert found["cosine"] == pytest.approx([1.0] * N, abs=1e-6)
    assert found["matched_above_0.7"] == found["matched_above_0.9"] == 1.0
    assert found["split_fraction"] == 0.0 and found["b_latents_matched"] == N
    assert "above 0.9: 1.0000" in capsys.readouterr().out


def test_chunks_equal_the_whole_product_and_a_split_latent_is_counted():
    a = Autoencoder.random(N, D, seed=3)
    b = Autoencoder.random(N + 1, D, seed=4)
    rows = a.W_dec.detach().clone()
    g = torch.Generator().manual_seed(5)
    v = torch.randn(D, generator=g)
    v -= (v @ rows[0]) * rows[0]
    v /= v.norm()
    with torch.no_grad():  # A's latent 0 splits into two of B at cosine 1/sqrt(1 + 0.75^2) = 0.8
        b.W_dec[0] = (rows[0] + 0.75 * v) / (1 + 0.75**2) ** 0.5
        b.W_dec[N] = (rows[0] - 0.75 * v) / (1 + 0.75**2) ** 0.5
    da = a.W_dec.detach().numpy() / np.linalg.norm(a.W_dec.detach().numpy(), axis=1, keepdims=True)
    db = b.W_dec.detach().numpy() / np.linalg.norm(b.W_dec.detach().numpy(), axis=1, keepdims=True)
    sims = da @ db.T
    whole = match(a, b)
    chunked = match(a, b, chunk=7)
    for found in (whole, chunked):
        assert found.best.tolist() == sims.argmax(1).tolist()
        assert found.cosine.numpy() == pytest.approx(sims.max(1), abs=1e-6)
        assert found.above.tolist() == (sims > 0.7).sum(1).tolist()
    assert whole.cosine[0] == pytest.approx(0.8, abs=1e-6) and whole.above[0] == 2
    summary = whole.summary()
    assert summary["split_fraction"] == pytest.approx(((sims > 0.7).sum(1) >= 2).mean())
    assert summary["matched_above_0.7"] == pytest.approx((sims.max(1) > 0.7).mean())


def test_different_widths_are_one_line(tmp_path, capsys):
    save(Autoencoder.random(8, 16), tmp_path / "a", "saelab")
    save(Autoencoder.random(8, 32), tmp_path / "b", "saelab")
    with pytest.raises(SystemExit) as exit_:
        main(["match", str(tmp_path / "a"), str(tmp_path / "b")])
    assert exit_.value.code == 2
    assert "different widths" in capsys.readouterr().err


def test_activation_correlations_equal_numpys_and_a_silent_latent_has_none():
    a = Autoencoder.random(N, D, k=8, seed=1)
    b = Autoencoder.random(N, D, k=8, seed=2)
    with torch.no_grad():
        a.W_enc[5] = 0  # pre-activation 0 on every token: never fires
    best = torch.randint(0, N, (N,), generator=torch.Generator().manual_seed(3))
    x = torch.randn(300, D, generator=torch.Generator().manual_seed(4))
    got = correlations(a, b, best, x.split(64))  # five batches, the last one short
    with torch.no_grad():
        za, zb = a.encode(x)[0].numpy(), b.encode(x)[0].numpy()[:, best.numpy()]
    for i in range(N):
        if za[:, i].std() == 0 or zb[:, i].std() == 0:
            assert np.isnan(got[i]), i
        else:
            assert got[i] == pytest.approx(np.corrcoef(za[:, i], zb[:, i])[0, 1], abs=1e-5), i
    assert np.isnan(got[5]) and (~got.isnan()).sum() > N // 2
