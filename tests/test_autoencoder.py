import math
from collections import OrderedDict

import pytest
import torch

import saelab
from saelab.errors import UserError
from saelab.sae.autoencoder import Autoencoder
from saelab.sae.checkpoints import load
from tests.conftest import openai_reference, openai_state_dict


def test_relu_matches_hand_computed():
    sd = {
        "pre_bias": torch.tensor([1.0, 0.0]),
        "encoder.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "latent_bias": torch.tensor([0.0, -1.0, 0.5]),
        "decoder.weight": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
        "stats_last_nonzero": torch.zeros(3, dtype=torch.long),
        "latents_activation_frequency": torch.zeros(3),
        "latents_mean_square": torch.zeros(3),
        "activation": "ReLU",
        "activation_state_dict": {},
    }
    sae = saelab.Autoencoder.from_state_dict(sd)
    x = torch.tensor([[2.0, 3.0], [0.0, -5.0]])
    latents, info = sae.encode(x)
    # row 0: x - b = [1, 3] -> pre [1, 2, 4.5]; row 1: [-1, -5] -> pre [-1, -6, -5.5]
    assert torch.allclose(latents, torch.tensor([[1.0, 2.0, 4.5], [0.0, 0.0, 0.0]]))
    assert info == {}
    recons = sae.decode(latents, info)
    assert torch.allclose(recons, torch.tensor([[6.5, 6.5], [1.0, 0.0]]))


def test_topk_layer_norm_matches_hand_computed():
    eye = torch.eye(4)
    sd = openai_state_dict(4, 4, k=2)
    sd.update(
        {
            "pre_bias": torch.zeros(4),
            "encoder.weight": eye,
            "latent_bias": torch.zeros(4),
            "decoder.weight": eye,
        }
    )
    sae = Autoencoder.from_state_dict(sd)
    assert sae.normalize and sae.k == 2
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    std = math.sqrt((4 + 1 + 0 + 9) / 3)  # unbiased, around the mean 3
    top = 3 / (std + 1e-5)
    latents, info = sae.encode(x)
    # the two largest normalised values are 3/(std+eps) (dim 3) and 0 (dim 2)
    assert torch.allclose(latents, torch.tensor([[0.0, 0.0, 0.0, top]]))
    assert torch.allclose(info["mu"], torch.tensor([[3.0]]))
    assert torch.allclose(info["std"], torch.tensor([[std]]))
    recons = sae.decode(latents, info)
    assert torch.allclose(recons, torch.tensor([[3.0, 3.0, 3.0, 3 + top * std]]))
    _, latents_fwd, recons_fwd = sae(x)
    assert torch.equal(latents_fwd, latents) and torch.equal(recons_fwd, recons)


@pytest.mark.parametrize("activation_keys", [False, True])
def test_openai_file_round_trips_through_blobfile(tmp_path, activation_keys):
    original = openai_state_dict(64, 16, k=4, activation_keys=activation_keys)
    path = tmp_path / "sae.pt"
    torch.save(original, path)
    sae = load(path=str(path)).sae  # reads through blobfile from a local path
    assert (sae.n_latents, sae.n_inputs, sae.k) == (64, 16, 4)
    out = sae.state_dict()
    expected = {k: v for k, v in original.items() if not k.startswith("activation.")}
    assert set(out) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert out[key].shape == value.shape and torch.equal(out[key], value), key
        else:
            assert out[key] == dict(value) if isinstance(value, OrderedDict) else out[key] == value
    torch.save(out, tmp_path / "again.pt")
    again = load(path=str(tmp_path / "again.pt")).sae
    assert torch.equal(again.W_dec, sae.W_dec) and again.k == 4


def test_relu_state_dict_round_trip():
    original = openai_state_dict(32, 8, k=None)
    sae = Autoencoder.from_state_dict(original)
    assert sae.k is None and not sae.normalize
    out = sae.state_dict()
    assert out["activation"] == "ReLU" and out["activation_state_dict"] == {}
    assert torch.equal(out["decoder.weight"], original["decoder.weight"])


def test_sparse_path_equals_dense_path():
    sae = Autoencoder.from_state_dict(openai_state_dict(512, 48, k=32, seed=3))
    x = 3 * torch.randn(100, 48) + 1
    dense, info = sae.encode(x)
    sparse, sparse_info = sae.encode_sparse(x)
    assert torch.equal(sparse.to_dense(), dense)
    assert torch.allclose(
        sae.decode_sparse(sparse, sparse_info), sae.decode(dense, info), atol=1e-5, rtol=1e-5
    )
    assert (dense != 0).sum(-1).max() <= 32


def test_nested_state_dict_loads_into_parent_module():
    sae = Autoencoder.random(16, 8, k=2, seed=1)
    parent = torch.nn.ModuleDict({"sae": sae})
    sd = parent.state_dict()
    assert "sae.decoder.weight" in sd and sd["sae.activation"] == "TopK"
    fresh = torch.nn.ModuleDict({"sae": Autoencoder(16, 8, k=2)})
    fresh.load_state_dict(sd)
    assert torch.equal(fresh["sae"].W_dec, sae.W_dec)


def test_refuses_arbitrary_unpickling(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"pre_bias": torch.zeros(2), "payload": UserError("code")}, path)
    with pytest.raises(UserError, match="weights_only"):
        load(path=str(path))


def test_truncated_and_wrong_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(openai_state_dict(32, 8, k=4), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load(path=str(truncated))
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(UserError, match="not a torch checkpoint|truncated or corrupt"):
        load(path=str(text))
    partial = tmp_path / "partial.pt"
    torch.save({"pre_bias": torch.zeros(8)}, partial)
    with pytest.raises(UserError, match="missing encoder.weight"):
        load(path=str(partial))


@pytest.mark.parametrize(
    "variant",
    ["relu", "relu_without_activation_key", "topk", "topk_with_activation_keys"],
)
def test_matches_an_independent_implementation_of_openais_formulas(variant):
    k = 4 if variant.startswith("topk") else None
    sd = openai_state_dict(64, 16, k=k, seed=5, activation_keys=variant.endswith("keys"))
    if variant == "relu_without_activation_key":  # v1/v4 files predate the entry
        del sd["activation"], sd["activation_state_dict"]
    sae = Autoencoder.from_state_dict(sd)
    assert sae.k == k and sae.normalize == (k is not None)
    x = 2 * torch.randn(50, 16, generator=torch.Generator().manual_seed(1)) + 0.5
    latents, recons = openai_reference(sd, x)
    assert (latents > 0).any()  # the comparison below is not between zeros
    got_latents, info = sae.encode(x)
    torch.testing.assert_close(got_latents, latents)
    torch.testing.assert_close(sae.decode(got_latents, info), recons)
    _, fwd_latents, fwd_recons = sae(x)
    torch.testing.assert_close(fwd_latents, latents)
    torch.testing.assert_close(fwd_recons, recons)
    if k is not None:
        sparse, info = sae.encode_sparse(x)
        torch.testing.assert_close(sparse.to_dense(), latents)
        torch.testing.assert_close(sae.decode_sparse(sparse, info), recons)


def test_file_without_activation_key_loads_as_relu(tmp_path):
    sd = openai_state_dict(32, 8, k=None)
    del sd["activation"], sd["activation_state_dict"]
    torch.save(sd, tmp_path / "v1.pt")
    sae = load(path=str(tmp_path / "v1.pt")).sae
    assert sae.k is None and not sae.normalize and sae.activation_name == "ReLU"
