"""Every hook location, against plain Hugging Face module hooks (an independent reference).

For each location (OpenAI's five and `resid_pre`), on a random GPT-2 and on the bundled tiny model:
the activation saelab captures equals the value built from the Hugging Face block's own
modules, and zero-ablation and SAE splicing give the logits of the same replacement done
with Hugging Face forward hooks (block arithmetic written out here, not saelab's).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from transformers import GPT2LMHeadModel

from saelab.evals.base import EvalBatch, RunContext
from saelab.evals.downstream import Downstream
from saelab.evals.evaluator import BatchEvaluator, Probe
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.models import ModelSource, bundled, random_gpt2, random_hf_gpt2
from saelab.sources.places import HOOKS, Place
from saelab.zoo import ZOO_DIR
from tests.conftest import TINY_MODEL

LAYER = 1


@pytest.fixture(scope="module", params=["random_gpt2", "zoo_tiny"])
def models(request) -> tuple[ModelSource, GPT2LMHeadModel]:
    """saelab's model source and an independently loaded Hugging Face copy of the same weights."""
    if request.param == "random_gpt2":
        source = random_gpt2(seed=0, **TINY_MODEL)
        hf = random_hf_gpt2(0, TINY_MODEL["n_layers"], 64, 2, 1024, TINY_MODEL["vocab_size"])
    else:
        source = bundled("tiny")
        hf = GPT2LMHeadModel.from_pretrained(ZOO_DIR / "tiny", local_files_only=True)
    return source, hf.eval()


def hf_value(hf: GPT2LMHeadModel, location: str, tokens: Tensor) -> Tensor:
    """The location's activation from the Hugging Face block's modules."""
    block, seen = hf.transformer.h[LAYER], {}
    handles = [
        block.register_forward_pre_hook(lambda m, args: seen.__setitem__("pre", args[0])),
        block.attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", out[0])),
        block.mlp.act.register_forward_hook(lambda m, a, out: seen.__setitem__("act", out)),
        block.mlp.register_forward_hook(lambda m, a, out: seen.__setitem__("mlp", out)),
        block.register_forward_hook(lambda m, a, out: seen.__setitem__("post", out)),
    ]
    with torch.no_grad():
        hf(tokens)
    for handle in handles:
        handle.remove()
    return {
        "resid_pre": seen["pre"],
        "mlp_post_act": seen["act"],
        "resid_delta_attn": seen["attn"],
        "resid_post_attn": seen["pre"] + seen["attn"],
        "resid_delta_mlp": seen["mlp"],
        "resid_post_mlp": seen["post"],
    }[location]


def hf_replaced_logits(
    hf: GPT2LMHeadModel, location: str, tokens: Tensor, mask: Tensor, value: Tensor
) -> Tensor:
    """Logits with the location's activation set to `value` at `mask`, by Hugging Face hooks."""
    block, seen = hf.transformer.h[LAYER], {}

    def put(out: Tensor, new: Tensor) -> Tensor:
        out = out.clone()
        out[mask] = new
        return out

    def replace_attn(m, a, out):
        if location == "resid_delta_attn":
            return (put(out[0], value), *out[1:])
        # resid_post_attn = block input + attention output: both the MLP's input and the
        # skip connection around it must see the new residual stream
        return (put(out[0], value - seen["pre"][mask]), *out[1:])

    def replace_input(m, args):  # the block's input: the residual stream entering it
        return (put(args[0], value), *args[1:])

    if location == "resid_pre":
        handle = block.register_forward_pre_hook(replace_input)
        with torch.no_grad():
            logits = hf(tokens).logits
        handle.remove()
        return logits
    hooks: dict[str, tuple[torch.nn.Module, Callable]] = {
        "mlp_post_act": (block.mlp.act, lambda m, a, out: put(out, value)),
        "resid_delta_attn": (block.attn, replace_attn),
        "resid_post_attn": (block.attn, replace_attn),
        "resid_delta_mlp": (block.mlp, lambda m, a, out: put(out, value)),
        "resid_post_mlp": (block, lambda m, a, out: put(out, value)),
    }
    module, fn = hooks[location]
    handles = [
        block.register_forward_pre_hook(lambda m, args: seen.__setitem__("pre", args[0])),
        module.register_forward_hook(fn),
    ]
    with torch.no_grad():
        logits = hf(tokens).logits
    for handle in handles:
        handle.remove()
    return logits


class Keep(Downstream):
    """Asks for every forward the downstream plugin needs and keeps the batch it is handed."""

    def update(self, batch: EvalBatch) -> None:
        self.batch = batch


def evaluate(source: ModelSource, location: str, tokens: Tensor, mask: Tensor) -> EvalBatch:
    place = Place(location, LAYER)
    sae = Autoencoder.random(512, source.width(place.hook), k=8, seed=1)
    keep = Keep()
    probe = Probe(RunContext.of_sae(sae, source, place), {"keep": keep})
    BatchEvaluator(source, [probe])(tokens, mask)
    return keep.batch


def inputs(source: ModelSource) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, source.vocab_size, (3, 12), generator=generator)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False  # as in eval: the first position is left alone
    return tokens, mask


@pytest.mark.parametrize("location", list(HOOKS))
def test_capture_equals_hugging_face_value(models, location):
    source, hf = models
    tokens, mask = inputs(source)
    batch = evaluate(source, location, tokens, mask)
    expected = hf_value(hf, location, tokens)[mask]
    torch.testing.assert_close(batch.acts, expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    torch.testing.assert_close(batch.log_probs, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("location", list(HOOKS))
def test_splice_and_ablation_equal_hugging_face_hooks(models, location):
    source, hf = models
    tokens, mask = inputs(source)
    batch = evaluate(source, location, tokens, mask)
    spliced = hf_replaced_logits(hf, location, tokens, mask, batch.recons).log_softmax(-1)
    zeros = torch.zeros_like(batch.recons)
    ablated = hf_replaced_logits(hf, location, tokens, mask, zeros).log_softmax(-1)
    torch.testing.assert_close(batch.spliced_log_probs, spliced, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.ablated_log_probs, ablated, atol=1e-4, rtol=1e-4)
    # the replacement matters: otherwise the comparison above would prove nothing
    assert not torch.allclose(batch.ablated_log_probs, batch.log_probs, atol=1e-2)
