"""The bundled zoo: its SAEs reach the metrics in the model card, through the real CLI path."""

import json

import pytest

from saelab.cli import main
from saelab.errors import UserError
from saelab.zoo import ZOO_DIR, sae_path

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
        sae_path("tiny", "topk", "mlp_post_act", 0)
    with pytest.raises(UserError, match="no bundled SAE family"):
        sae_path("tiny", "v9", "resid_post_mlp", 0)
