"""The bundled zoo: its SAEs reach the metrics in the model card, through the real CLI path."""

import json

import pytest
import torch
from safetensors.torch import load_file
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


# -- the sparsity frontier (experiments/tiny_zoo/train_frontier.sh) ----------------------------
FRONTIER = json.loads((ZOO_DIR / "tiny" / "saes" / "frontier.json").read_text())
RECIPES = ("topk", "relu_l1", "batchtopk", "jumprelu", "matryoshka", "multi_topk")


def test_frontier_is_every_recipe_at_three_sparsities_in_float16_within_15_mb():
    assert sorted((e["family"], e["variant"]) for e in FRONTIER) == sorted(
        (f"frontier_{r}", f"l0_{t}") for r in RECIPES for t in (8, 16, 32)
    )
    files = sorted((ZOO_DIR / "tiny" / "saes").glob("frontier_*/l0_*/resid_post_mlp/2.*"))
    assert len(files) == 2 * len(FRONTIER)  # weights and config
    assert sum(f.stat().st_size for f in files) <= 15e6
    for weights in (f for f in files if f.suffix == ".safetensors"):
        tensors = load_file(str(weights))
        assert tensors["W_enc"].dtype == torch.float16 and tensors["W_enc"].shape == (256, 256)


@pytest.mark.parametrize("family, variant", [("jumprelu", "l0_16"), ("matryoshka", "l0_8")])
def test_frontier_sae_reaches_its_model_card_metrics(family, variant, tmp_path):
    """Through `saelab eval` with the bundled source's variant (saelab's format, float16 on
    disk), the numbers the frontier sweep put in the card."""
    entry = next(
        e for e in FRONTIER if e["family"] == f"frontier_{family}" and e["variant"] == variant
    )
    main(
        [
            "eval",
            "experiment=tiny",
            f"sae.family=frontier_{family}",
            f"+sae.variant={variant}",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    record = json.loads((tmp_path / "metrics.json").read_text())
    metrics = record["metrics"]
    for key in ("reconstruction/nmse", "sparsity/l0", "downstream/ce_loss_recovered"):
        assert metrics[key] == pytest.approx(entry[key], abs=1e-3), key
    assert record["provenance"]["sae_family"] == f"frontier_{family}"


def test_missing_frontier_variant_is_a_clear_error():
    expected = "has no variant 'l0_9'; one of \\['l0_16', 'l0_32', 'l0_8'\\]"
    with pytest.raises(UserError, match=expected):
        sae_path("tiny", "frontier_topk", Place("resid_post_mlp", 2), "l0_9")
