"""`sweep.match=true`: which SAEs of a sweep are paired (by hand), the pairs of a real tiny
frontier sweep against decoder cosines computed here with numpy from the zoo's files, and a
resumed sweep that redoes only the pair whose file is gone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from saelab.cli import main
from saelab.sae.match import Candidate, pairs

ZOO = Path(__file__).resolve().parent.parent / "saelab" / "zoo" / "tiny" / "saes"
PLACE = "resid_post_mlp/2"
# three of the frontier's SAEs: two TopK neighbours in L0 and a ReLU one
CHOSEN = {"topk_l0_8": ("frontier_topk", "l0_8"), "topk_l0_16": ("frontier_topk", "l0_16"),
          "relu_l1_l0_16": ("frontier_relu_l1", "l0_16")}  # fmt: skip


def test_pairs_are_family_neighbours_and_the_nearest_l0_of_each_other_family():
    def c(name, family, l0, place="p", n=64):
        return Candidate(name, place, family, n, l0)

    f4, f8, f16 = c("f4", "F", 4), c("f8", "F", 8), c("f16", "F", 16)
    g5, g30 = c("g5", "G", 5), c("g30", "G", 30)
    wide = c("h6", "H", 6, n=256)  # more latents: always A's partner B, never A
    alone = c("q", "F", 8, place="q")  # the only SAE at its place: no pair
    found = {(a.name, b.name): why for a, b, why in pairs([f16, g30, f4, wide, g5, f8, alone])}
    # by hand: log distances |ln(x/y)|; F's 4 and 8 are nearest G's 5; 16 is nearer 30 (0.63)
    # than 5 (1.16); G's 5 is nearest F's 4 (0.22 < 0.47), 30 nearest 16; H's 6 nearest F's 8
    # (0.29 < 0.41) and G's 5; F's and G's SAEs are all nearest H's only SAE
    assert found == {
        ("f4", "f8"): "family neighbours",
        ("f8", "f16"): "family neighbours",
        ("g5", "g30"): "family neighbours",
        ("f4", "g5"): "matched L0",
        ("g5", "f8"): "matched L0",  # equal widths: the lower L0 is A
        ("f16", "g30"): "matched L0",
        ("f4", "h6"): "matched L0",
        ("f8", "h6"): "matched L0",
        ("f16", "h6"): "matched L0",
        ("g5", "h6"): "matched L0",
        ("g30", "h6"): "matched L0",
    }


def unit_rows(family: str, variant: str) -> np.ndarray:
    """The zoo SAE's decoder directions, read straight from its safetensors (saelab's layout:
    W_dec [n_latents, d])."""
    w = load_file(ZOO / family / variant / "resid_post_mlp" / "2.safetensors")["W_dec"]
    w = w.astype(np.float64)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("match") / "sweep"
    saes = [
        f"+sweep.saes.{name}={{_target_:saelab.sae.checkpoints.Bundled,model:tiny,"
        f"family:{family},variant:{variant},location:resid_post_mlp,layer:2}}"
        for name, (family, variant) in CHOSEN.items()
    ]
    args = ["sweep", "model=tiny", "data=bundled", "sae=none", *saes, "logger=none",
            "data.n_tokens=2048", "evals=[reconstruction]", "sweep.match=true",
            f"hydra.run.dir={out}"]  # fmt: skip
    main(args)
    return out, args


def test_each_pair_matches_the_decoder_cosines_computed_here(sweep):
    out, _ = sweep
    rows = {r["run"].split("/")[0]: r for r in json.loads((out / "sweep.json").read_text())}
    summary = json.loads((out / "matches.json").read_text())
    # three SAEs in two families: every two are paired (neighbours, or nearest of the other
    # family), A the lower L0 at equal widths
    names = sorted(CHOSEN, key=lambda n: rows[n]["sparsity/l0"])
    expected = {(a, b) for i, a in enumerate(names) for b in names[i + 1 :]}
    assert {(m["a"].split("/")[0], m["b"].split("/")[0]) for m in summary} == expected
    for entry in summary:
        a, b = entry["a"].split("/")[0], entry["b"].split("/")[0]
        assert entry["place"] == PLACE and entry["file"] == f"matches/{PLACE}/{a}__{b}.json"
        assert entry["pairing"] == ("family neighbours" if a[:4] == b[:4] else "matched L0")
        record = json.loads((out / entry["file"]).read_text())
        sims = unit_rows(*CHOSEN[a]) @ unit_rows(*CHOSEN[b]).T
        assert record["best"] == sims.argmax(1).tolist()
        assert record["cosine"] == pytest.approx(sims.max(1), abs=1e-5)
        assert record["matches_above_threshold"] == (sims > 0.7).sum(1).tolist()
        assert record["a"]["run"] == entry["a"] and record["b"]["run"] == entry["b"]
        for key, value in (("matched_above_0.7", (sims.max(1) > 0.7).mean()),
                           ("matched_above_0.9", (sims.max(1) > 0.9).mean()),
                           ("split_fraction", ((sims > 0.7).sum(1) >= 2).mean()),
                           ("mean_cosine", sims.max(1).mean())):  # fmt: skip
            assert entry[key] == pytest.approx(value, abs=1e-5), (a, b, key)
            assert record[key] == entry[key]
        sha = json.loads((out / entry["a"] / "metrics.json").read_text())["provenance"]
        assert record["a"]["sha256"] == sha["sae_sha256"]


def test_resume_redoes_only_the_pair_whose_file_is_missing(sweep, capsys):
    out, args = sweep
    files = sorted((out / "matches").rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in files}
    gone = files[0]
    expected = json.loads(gone.read_text())
    gone.unlink()
    main([*args, "resume=true"])
    assert "3 pairs of SAEs matched" in capsys.readouterr().out
    assert json.loads(gone.read_text()) == expected
    for path, mtime in before.items():
        if path != gone:
            assert path.stat().st_mtime_ns == mtime, path
