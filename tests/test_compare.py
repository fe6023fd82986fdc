"""`saelab compare` on a real tiny-zoo sweep: the table, and the one-line refusals. (The paired
SE's formula is checked by hand in tests/test_stderr.py.)"""

import json
import shutil

import pytest
from safetensors.torch import load_file

from saelab.cli import main

LAYER_2, LAYER_3 = "topk/resid_post_mlp/2", "topk/resid_post_mlp/3"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare") / "sweep"
    main([
        "sweep", "experiment=tiny_all", "logger=none", "data.n_tokens=2048",
        "evals=[reconstruction,downstream,density]", "layer=[2,3]", "location=resid_post_mlp",
        "sweep.saes=null", f"hydra.run.dir={root}",
    ])  # fmt: skip
    return root


def test_runs_record_their_tokens_and_per_context_values(sweep):
    rows = json.loads((sweep / "sweep.json").read_text())
    assert sorted(r["run"] for r in rows) == [LAYER_2, LAYER_3]
    assert len({r["tokens_sha256"] for r in rows}) == 1
    record = json.loads((sweep / LAYER_2 / "metrics.json").read_text())
    row = next(r for r in rows if r["run"] == LAYER_2)
    for key, se in record["stderr"].items():  # the summary carries each SE beside its value
        assert row[f"{key}_se"] == se and key in record["metrics"]
    assert "density/dead_fraction" not in record["stderr"]  # no per-context decomposition
    contexts = load_file(sweep / LAYER_2 / "contexts.safetensors")
    assert contexts["context"].tolist() == list(range(2048 // 64))  # every context once
    assert set(record["stderr"]) == set(contexts) - {"context"}


def test_compare_prints_each_difference_with_its_paired_se(sweep, capsys):
    main(["compare", str(sweep / LAYER_2), str(sweep / LAYER_3 / "metrics.json")])
    out = capsys.readouterr().out
    a = json.loads((sweep / LAYER_2 / "metrics.json").read_text())
    b = json.loads((sweep / LAYER_3 / "metrics.json").read_text())
    lines = {line.split()[0]: line for line in out.splitlines() if "/" in line.split()[0]}
    lines.pop("A:", None), lines.pop("B:", None)
    assert set(lines) == set(a["stderr"])
    for key, line in lines.items():
        parts = line.split()  # metric, A, ±, se, B, ±, se, A-B, ±, paired se, z[, *]
        difference, se, z = float(parts[7]), float(parts[9]), float(parts[10])
        expected = a["metrics"][key] - b["metrics"][key]
        assert difference == pytest.approx(expected, rel=1e-3, abs=1e-12), key
        if se > 0:
            assert z == pytest.approx(expected / se, rel=0.06, abs=0.01), key  # se: 2 digits
            assert (parts[-1] == "*") == (abs(expected / se) > 1.96), key
    # pairing: the layers' CE losses differ by far less noise than either run's own
    line = lines["downstream/ce_sae"].split()
    assert float(line[9]) < 0.5 * min(float(line[3]), float(line[6]))


def test_compare_refuses_runs_on_other_tokens_and_runs_without_per_context_values(
    sweep, tmp_path, capsys
):
    other = tmp_path / "other"
    shutil.copytree(sweep / LAYER_3, other)
    record = json.loads((other / "metrics.json").read_text())
    record["provenance"]["tokens_sha256"] = "0" * 64
    (other / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(sweep / LAYER_2), str(other)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not evaluated on the same tokens" in err

    (other / "contexts.safetensors").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(sweep / LAYER_2), str(other)])
    assert exit_.value.code == 2 and "contexts.safetensors" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(sweep / LAYER_2), str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "not a complete run" in capsys.readouterr().err
