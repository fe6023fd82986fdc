import pytest
import torch

from saelab.errors import UserError
from saelab.models import HOOKS, hf_local, random_hf_gpt2
from tests.conftest import TINY_MODEL


@pytest.mark.parametrize("location", list(HOOKS))
def test_every_location_hooks_the_right_activation(tiny_model, location):
    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (2, 7))
    hook = tiny_model.hook_name(location, 0)
    seen = []
    with torch.no_grad():
        tiny_model.bridge.run_with_hooks(
            tokens, fwd_hooks=[(hook, lambda a, hook: seen.append(a))], stop_at_layer=1
        )
        hf = tiny_model.bridge.original_model
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    (act,) = seen
    assert act.shape == (2, 7, tiny_model.width(location))
    if location == "resid_post_mlp":  # the residual stream after block 0 (un-centred)
        assert torch.allclose(act, hidden[1], atol=1e-5)
    if location == "mlp_post_act":
        assert tiny_model.width(location) == 4 * TINY_MODEL["d_model"]


def test_resid_deltas_add_up(tiny_model):
    """resid_post_mlp = resid_post_attn + resid_delta_mlp, and resid_post_attn = pre + attn."""
    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (2, 7))
    acts = {}
    names = {loc: tiny_model.hook_name(loc, 0) for loc in HOOKS}
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


def test_patched_activation_changes_downstream_logits(tiny_model):
    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (1, 6))
    hook = tiny_model.hook_name("resid_delta_mlp", 0)
    with torch.no_grad():
        clean = tiny_model.bridge(tokens)
        same = tiny_model.bridge.run_with_hooks(tokens, fwd_hooks=[(hook, lambda a, hook: a)])
        zeroed = tiny_model.bridge.run_with_hooks(
            tokens, fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))]
        )
    assert torch.allclose(clean, same)
    assert not torch.allclose(clean, zeroed)


def test_random_model_is_seeded():
    from saelab.models import random_gpt2

    tokens = torch.randint(0, TINY_MODEL["vocab_size"], (1, 5))
    with torch.no_grad():
        a, b, c = (random_gpt2(seed=s, **TINY_MODEL).bridge(tokens) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_bad_layer_and_location(tiny_model):
    with pytest.raises(UserError, match="layers 0-1"):
        tiny_model.hook_name("resid_post_mlp", 2)
    with pytest.raises(UserError, match="unknown location 'resid_pre'"):
        tiny_model.hook_name("resid_pre", 0)


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
