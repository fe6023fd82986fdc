import pytest
import torch

from saelab.errors import UserError
from saelab.sources.models import hf_local, random_hf_gpt2
from saelab.sources.places import HOOKS, Place, check_layers
from tests.conftest import TINY_MODEL


def test_resid_deltas_add_up(tiny_model):
    """resid_post_mlp = resid_post_attn + resid_delta_mlp, and resid_post_attn = pre + attn."""
    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (2, 7))
    acts = {}
    names = {loc: Place(loc, 0).hook for loc in HOOKS}
    hooks = [
        (name, lambda a, hook, loc=loc: acts.__setitem__(loc, a)) for loc, name in names.items()
    ] + [("blocks.0.hook_resid_pre", lambda a, hook: acts.__setitem__("pre", a))]
    with torch.no_grad():
        tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=1)
    assert torch.allclose(
        acts["resid_post_attn"] + acts["resid_delta_mlp"], acts["resid_post_mlp"], atol=1e-5
    )
    assert torch.allclose(
        acts["pre"] + acts["resid_delta_attn"], acts["resid_post_attn"], atol=1e-5
    )


def test_random_model_is_seeded():
    from saelab.sources.models import random_gpt2

    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (1, 5))
    with torch.no_grad():
        a, b, c = (random_gpt2(seed=s, **TINY_MODEL).bridge(tokens) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_bad_layer_and_location(tiny_model):
    with pytest.raises(UserError, match="layer=2 is out of range: .* has layers 0-1"):
        check_layers([0, 2], tiny_model)
    with pytest.raises(UserError, match="unknown location 'resid_mid'"):
        Place("resid_mid", 0)
    assert Place("resid_pre", 1).hook == "blocks.1.hook_resid_pre"
    assert Place.of_hook("blocks.1.hook_resid_pre") == Place("resid_pre", 1)
    assert len(tiny_model.places()) == 2 * len(HOOKS)


def test_hf_local_loads_a_saved_model_offline(tiny_model, tmp_path):
    random_hf_gpt2(seed=0, n_ctx=1024, **TINY_MODEL).save_pretrained(tmp_path)
    tiny_model.tokenizer.save_pretrained(tmp_path)
    local = hf_local(str(tmp_path))
    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (1, 5))
    with torch.no_grad():
        assert torch.allclose(local.bridge(tokens), tiny_model.bridge(tokens), atol=1e-5)
    assert local.tokenizer("ab", add_special_tokens=False)["input_ids"] == [
        tiny_model.tokenizer.convert_tokens_to_ids(c) for c in "ab"
    ]
    with pytest.raises(UserError, match="no Hugging Face model"):
        hf_local(str(tmp_path / "missing"))
