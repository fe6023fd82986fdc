"""The bundled zoo: its SAEs reach the metrics in the model card, through the real CLI path."""

import json

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from saelab.cli import main
from saelab.data.tokens import Bundled, TokenDataModule
from saelab.errors import UserError
from saelab.sources.places import Place
from saelab.zoo import ZOO_DIR, sae_path
from tests.conftest import openai_reference

CARD = json.loads((ZOO_DIR / "tiny" / "saes" / "metrics.json").read_text())


@pytest.mark.parametrize("entry", CARD, ids=lambda e: f"{e['family']}-{e['location']}-{e['layer']}")
def test_bundled_sae_reaches_its_model_card_metrics(entry, tmp_path):
    family = {"topk": "tiny_topk", "relu_l1": "tiny_relu"}[entry["family"]]
    main(
        [
            "eval",
            "experiment=tiny",
            f"sae={family}",
            f"location={entry['location']}",
            f"layer={entry['layer']}",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["reconstruction/nmse"] == pytest.approx(entry["reconstruction/nmse"], abs=1e-3)
    assert metrics["downstream/ce_loss_recovered"] == pytest.approx(
        entry["downstream/ce_loss_recovered"], abs=1e-3
    )
    assert metrics["downstream/ce_clean"] == pytest.approx(entry["downstream/ce_clean"], abs=1e-3)


def test_bundled_saes_are_useful():
    """Not just present: each recovers most of the loss its layer's ablation costs."""
    for entry in CARD:
        assert entry["downstream/ce_loss_recovered"] > 0.7, entry
        assert entry["reconstruction/nmse"] < 0.5, entry


def test_missing_bundled_sae_is_a_clear_error():
    with pytest.raises(UserError, match="bundled: "):
        sae_path("tiny", "topk", Place("mlp_post_act", 0))
    with pytest.raises(UserError, match="no bundled SAE family"):
        sae_path("tiny", "v9", Place("resid_post_mlp", 0))


def test_nmse_recomputed_from_the_raw_checkpoint_and_hugging_face(tmp_path):
    """An independent check of one bundled SAE: Hugging Face's hidden states, OpenAI's formulas
    written out in the test, and nmse by its definition, against what `saelab eval` reports."""
    main(
        [
            "eval",
            "experiment=tiny",
            "evals=[reconstruction]",
            "data.n_tokens=8192",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    reported = json.loads((tmp_path / "metrics.json").read_text())["metrics"]

    tokenizer = AutoTokenizer.from_pretrained(ZOO_DIR / "tiny", local_files_only=True)
    data = TokenDataModule(Bundled("val"), n_tokens=8192)
    data.prepare(tokenizer, tokenizer.vocab_size, 1024)
    model = GPT2LMHeadModel.from_pretrained(ZOO_DIR / "tiny", local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(data.tokens, output_hidden_states=True).hidden_states
    x = hidden[3][:, 1:].reshape(-1, hidden[3].shape[-1])  # after block 2, first position out
    state_dict = torch.load(sae_path("tiny", "topk", Place("resid_post_mlp", 2)), weights_only=True)
    _, recons = openai_reference(state_dict, x)
    nmse = ((recons - x).pow(2).sum(-1) / x.pow(2).sum(-1)).mean().item()
    assert len(x) == 128 * 63
    assert reported["reconstruction/nmse"] == pytest.approx(nmse, rel=1e-4)
