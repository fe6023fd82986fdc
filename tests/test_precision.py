"""`precision=`: the model's forwards autocast (or not), everything after them in fp32."""

from __future__ import annotations

import json

import pytest
import torch

from saelab.cli import main
from saelab.errors import UserError
from saelab.sources.models import random_gpt2
from saelab.sources.precision import Precision

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return random_gpt2(n_layers=2, d_model=64, n_heads=4, n_ctx=32, vocab_size=300)


ALIASES = [("32", "32"), ("32-true", "32"), ("tf32", "tf32"), ("bf16", "bf16"),
           ("bf16-mixed", "bf16"), (32, "32")]  # fmt: skip


@pytest.mark.parametrize(("value", "name"), ALIASES)
def test_names_and_lightning_aliases(value, name):
    assert Precision.parse(value).name == name


def test_unknown_and_impossible_precisions_are_errors():
    with pytest.raises(UserError, match="precision=16 is not one of"):
        Precision.parse("16")
    with pytest.raises(UserError, match="tf32 needs a CUDA device"):
        Precision("tf32").check(torch.device("cpu"))
    Precision("bf16").check(torch.device("cpu"))  # CPU autocast does bfloat16


def test_bf16_forwards_equal_hugging_face_under_autocast(model):
    """The expected values: the same Hugging Face module under torch's own autocast."""
    hf = model.bridge.original_model
    tokens = torch.randint(0, 299, (3, 16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = hf(tokens, output_hidden_states=True)
    with torch.no_grad():
        _, fp32_logits = model.capture(tokens, [HOOK])
        bf16 = random_gpt2(n_layers=2, d_model=64, n_heads=4, n_ctx=32, vocab_size=300)
        bf16.precision = Precision("bf16")
        acts, logits = bf16.capture(tokens, [HOOK])
        from_block = bf16.forward_from(0, expected.hidden_states[0])
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(acts[HOOK], expected.hidden_states[1], rtol=0, atol=0)
    torch.testing.assert_close(from_block, expected.logits, rtol=0, atol=0)
    assert not torch.equal(logits.float(), fp32_logits)  # autocast did change the arithmetic
    assert model.precision.name == "32"


def test_bf16_eval_records_its_precision_and_stays_close_to_fp32(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    common = ["experiment=tiny", "data.n_tokens=2048", "logger=none"]
    metrics = {}
    for precision in ("32", "bf16"):
        main(["eval", *common, f"precision={precision}", f"run_name=p{precision}"])
        (path,) = tmp_path.rglob(f"p{precision}/metrics.json")
        record = json.loads(path.read_text())
        assert record["provenance"]["precision"] == precision
        metrics[precision] = record["metrics"]
    fp32, bf16 = metrics["32"], metrics["bf16"]
    for key in ("reconstruction/nmse", "downstream/ce_loss_recovered", "sparsity/l0"):
        assert bf16[key] == pytest.approx(fp32[key], rel=0.05), key
    assert bf16["reconstruction/nmse"] != fp32["reconstruction/nmse"]
