"""`saelab sweep`: one pass for many SAEs equals separate `saelab eval` runs; resume; groups."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from saelab.cli import main
from tests.conftest import TINY_OVERRIDES, write_openai_checkpoint

DATA = ["data=random_tokens", "data.n_tokens=640", "data.batch_size=4", "data.n_ctx=16"]
COMMON = ["model=random_gpt2", *TINY_OVERRIDES, *DATA, "logger=none"]
# (name, location, layer, width, k): two SAEs share the layer-1 resid_post_mlp hook
SAES = [
    ("a", "resid_post_mlp", 1, 64, 8),
    ("b", "resid_post_mlp", 1, 64, None),
    ("c", "resid_post_attn", 0, 64, 4),
    ("d", "mlp_post_act", 1, 256, 8),
]


@pytest.fixture
def checkpoints(tmp_path) -> dict[str, Path]:
    return {
        name: write_openai_checkpoint(tmp_path / f"{name}.pt", 128, width, k=k, seed=i)
        for i, (name, _, _, width, k) in enumerate(SAES)
    }


def sweep_overrides(checkpoints: dict[str, Path]) -> list[str]:
    out = ["sae=none"]
    for name, location, layer, _, _ in SAES:
        entry = f"+sweep.saes.{name}"
        out += [
            f"{entry}._target_=saelab.sae.checkpoints.Files",
            f"{entry}.path={checkpoints[name]}",
            f"{entry}.location={location}",
            f"{entry}.layer={layer}",
        ]
    return out


def metrics(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["metrics"]


def test_fused_sweep_equals_separate_eval_runs(tmp_path, checkpoints):
    root = tmp_path / "sweep"
    main(["sweep", *COMMON, *sweep_overrides(checkpoints), f"hydra.run.dir={root}"])
    rows = json.loads((root / "sweep.json").read_text())
    expected = sorted(f"{name}/{location}/{layer}" for name, location, layer, *_ in SAES)
    assert sorted(row["run"] for row in rows) == expected
    assert (root / "sweep.csv").read_text().count("\n") == len(SAES) + 1
    for name, location, layer, _, _ in SAES:
        alone = tmp_path / f"eval-{name}"
        main(
            [
                "eval",
                *COMMON,
                "sae=file",
                f"sae.path={checkpoints[name]}",
                f"location={location}",
                f"layer={layer}",
                f"hydra.run.dir={alone}",
            ]
        )
        fused, separate = (
            metrics(root / name / location / str(layer) / "metrics.json"),
            metrics(alone / "metrics.json"),
        )
        assert fused.keys() == separate.keys()
        for key, value in separate.items():
            assert fused[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)


def device_bytes(width: int, n_latents: int = 128, n_contexts: int = 640 // 16) -> tuple[int, int]:
    """(weights, per-context state) of an SAE of `SAES` in a sweep's pass, by hand: fp32 W_enc,
    W_dec, both biases and two float buffers per latent, an int64 one; per context, the
    reconstruction's index, 8 float64 sums and a float32 sum per input dimension, and the
    downstream's index and 5 float64 sums (`evals` default to reconstruction, downstream,
    density; density keeps nothing per context)."""
    weights = 4 * (2 * n_latents * width + n_latents + width) + (4 + 4 + 8) * n_latents
    return weights, n_contexts * ((8 + 8 * 8 + 4 * width) + (8 + 5 * 8))


def test_memory_budget_splits_the_pass_and_resume_redoes_only_what_is_missing(
    tmp_path, checkpoints, capsys
):
    root = tmp_path / "sweep"
    args = ["sweep", *COMMON, *sweep_overrides(checkpoints), f"hydra.run.dir={root}"]
    small, large = sum(device_bytes(64)), sum(device_bytes(256))
    budget = 3 * device_bytes(64)[0]  # the weights of a, b and c, not their states
    assert 2 * small <= budget < 3 * small and small + large > budget
    main([*args, f"sweep.memory_budget={budget}"])  # a and b share a pass, c and d go alone
    out = capsys.readouterr().out
    assert out.count("evaluated 2 SAE(s)") == 1 and out.count("evaluated 1 SAE(s)") == 2
    group_size = {name: json.loads((root / name / location / str(layer) / "metrics.json")
                                   .read_text())["provenance"]["group_size"]
                  for name, location, layer, *_ in SAES}  # fmt: skip
    assert group_size == {"a": 2, "b": 2, "c": 1, "d": 1}
    first = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.json")}
    unfinished = root / "c" / "resid_post_attn" / "0" / "metrics.json"
    expected = metrics(unfinished)
    # as if the sweep had been killed while writing it: a truncated file, a stale temp file
    unfinished.write_text(unfinished.read_text()[:40])
    stale = unfinished.parent / ".config.yaml.abc123.partial"
    stale.write_text("half")

    main([*args, "resume=true"])
    out = capsys.readouterr().out
    assert "3 of 4 SAEs are complete, skipped" in out and "evaluated 1 SAE(s)" in out
    assert metrics(unfinished) == pytest.approx(expected)
    assert not stale.exists()
    for path, mtime in first.items():
        if path != unfinished:
            assert path.stat().st_mtime_ns == mtime, path
    assert len(json.loads((root / "sweep.json").read_text())) == len(SAES)


def test_family_expands_over_layers_and_locations(tmp_path):
    root = tmp_path / "zoo"
    main(
        [
            "sweep",
            "experiment=tiny_all",
            "logger=none",
            "data.n_tokens=4096",
            "evals=[reconstruction]",
            "location=resid_post_mlp",
            "layer=[1,2]",
            f"hydra.run.dir={root}",
        ]
    )
    runs = sorted(row["run"] for row in json.loads((root / "sweep.json").read_text()))
    # the TopK family at the two layers asked for, and the named ReLU SAE
    assert runs == ["relu_l1/resid_post_mlp/2", "topk/resid_post_mlp/1", "topk/resid_post_mlp/2"]


def test_eval_resume_skips_a_complete_run(tmp_path, checkpoints, capsys):
    run = [
        "eval",
        *COMMON,
        "sae=file",
        f"sae.path={checkpoints['a']}",
        "layer=1",
        "location=resid_post_mlp",
        "evals=[reconstruction]",
        f"hydra.run.dir={tmp_path}",
    ]
    main(run)
    mtime = (tmp_path / "metrics.json").stat().st_mtime_ns
    main([*run, "resume=true"])
    assert "is complete, skipped" in capsys.readouterr().out
    assert (tmp_path / "metrics.json").stat().st_mtime_ns == mtime
    full = (tmp_path / "metrics.json").read_text()
    (tmp_path / "metrics.json").write_text(full[: len(full) // 2])  # killed mid-write
    main([*run, "resume=true"])
    assert "is complete" not in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]


def test_joblib_multirun_and_its_summary(tmp_path, checkpoints):
    from tests.test_cli import saelab

    result = saelab(
        "eval",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *COMMON,
        "sae=file",
        f"sae.path={checkpoints['a']}",
        "layer=0,1",
        "location=resid_post_mlp",
        "evals=[reconstruction]",
        "run_name=joblib",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "logs/eval/multiruns/joblib/sweep.json").read_text())
    assert sorted(row["hook"] for row in rows) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from saelab.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.partition == "gpu"


def export_files(directory: Path) -> dict[str, object]:
    """Every file of an export, parsed (the manifest without its creation time)."""
    files = {}
    for path in sorted(directory.rglob("*.json*")):
        if path.name == "metrics.json":  # the run's, beside a `saelab export` run's export
            continue
        raw = path.read_bytes()
        data = json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
        if path.name == "manifest.json":
            data.pop("created")
        files[str(path.relative_to(directory))] = data
    return files


def test_sweep_with_export_equals_separate_exports(tmp_path, checkpoints):
    """`export=true`: every SAE's export from the sweep's one pass, file for file equal to a
    `saelab export` run of that SAE alone on the same tokens."""
    root = tmp_path / "sweep"
    chosen = [s for s in SAES if s[0] in ("a", "d")]  # a shared hook's TopK, an MLP's
    overrides = [arg for arg in sweep_overrides(checkpoints)
                 if arg == "sae=none" or arg.split(".")[2] in ("a", "d")]  # fmt: skip
    main(["sweep", *COMMON, *overrides, "export=true", f"hydra.run.dir={root}"])
    for name, location, layer, _, _ in chosen:
        alone = tmp_path / f"export-{name}"
        main(["export", *COMMON, "sae=file", f"sae.path={checkpoints[name]}",
              f"location={location}", f"layer={layer}", f"hydra.run.dir={alone}"])  # fmt: skip
        fused = export_files(root / name / location / str(layer) / "export")
        assert fused.keys() == export_files(alone).keys() and len(fused) > 5
        assert fused == export_files(alone), name
