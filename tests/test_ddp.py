"""`saelab eval trainer=ddp` through the real CLI: two CPU processes (gloo) relaunched by
Lightning evaluate every context once, into one run directory, with one process's metrics."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_openai_checkpoint
from tests.test_cli import run_in_process

N_CTX, N_CONTEXTS = 16, 33  # an odd count: a padding sampler would repeat one context
ARGS = [
    "model=random_gpt2",
    "model.n_layers=2",
    "model.d_model=64",
    "model.n_heads=2",
    "model.vocab_size=512",
    "data=random_tokens",
    f"data.n_tokens={N_CTX * N_CONTEXTS}",
    f"data.n_ctx={N_CTX}",
    "data.batch_size=4",
    "location=resid_post_mlp",
    "evals=[reconstruction,downstream,density]",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
]
SAE_AT_LAYER_1 = ["layer=1", "sae=file"]
DDP = ["trainer=ddp", "trainer.devices=2"]
MODULE = [sys.executable, "-m", "saelab"]


def saelab(launch: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*launch, "eval", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "logs" / "eval" / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_openai_checkpoint(tmp_path_factory.mktemp("sae") / "topk.pt", 256, 64, k=8)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, checkpoint) -> dict:
    cwd = tmp_path_factory.mktemp("one")
    result = saelab(MODULE, *ARGS, *SAE_AT_LAYER_1, f"sae.path={checkpoint}", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads((only_run_dir(cwd) / "metrics.json").read_text())


@pytest.mark.parametrize("launcher", ["python -m saelab", "console script"])
def test_two_processes_count_each_token_once(tmp_path, checkpoint, one_process, launcher):
    launch = MODULE
    if launcher == "console script":  # Lightning relaunches it by path, not with -m
        script = shutil.which("saelab", path=str(Path(sys.executable).parent))
        assert script, "the saelab console script is not installed next to this python"
        launch = [script]
    result = saelab(launch, *ARGS, *DDP, *SAE_AT_LAYER_1, f"sae.path={checkpoint}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    run_dir = only_run_dir(tmp_path)  # one, though its default name is the launch time
    assert (run_dir / "train_ddp_process_1.log").is_file()  # Hydra's log of Lightning's rank 1
    assert result.stdout.count("results: ") == 1  # one table, from rank 0
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["provenance"]["n_tokens"] == N_CONTEXTS * (N_CTX - 1)
    assert one_process["provenance"]["n_tokens"] == N_CONTEXTS * (N_CTX - 1)
    metrics, reference = written["metrics"], one_process["metrics"]
    assert metrics.keys() == reference.keys()
    for family in ("reconstruction/", "sparsity/", "downstream/", "density/"):
        assert any(key.startswith(family) for key in metrics), family
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    # standard errors from every rank's per-context sums
    assert written["stderr"].keys() == one_process["stderr"].keys()
    for key, value in one_process["stderr"].items():
        assert written["stderr"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_a_sweep_of_ddp_jobs_is_a_clear_error(monkeypatch, tmp_path, capsys, checkpoint):
    line = run_in_process(
        ["eval", "-m", "layer=0,1", *ARGS, *DDP, "sae=file", f"sae.path={checkpoint}"],
        monkeypatch,
        tmp_path,
        capsys,
    )
    assert "a -m sweep cannot run trainer=ddp jobs" in line
    assert not list(tmp_path.rglob("metrics.json"))


def sweep(launch_ddp: bool, checkpoint: Path, cwd: Path) -> dict[str, dict]:
    """Two SAEs, one per pass (`sweep.memory_budget=1`): the trainer serves both groups."""
    entries = []
    for name, layer in (("a", 0), ("b", 1)):
        entries += [
            f"+sweep.saes.{name}._target_=saelab.sae.checkpoints.Files",
            f"+sweep.saes.{name}.path={checkpoint}",
            f"+sweep.saes.{name}.location=resid_post_mlp",
            f"+sweep.saes.{name}.layer={layer}",
        ]
    args = [a for a in ARGS if not a.startswith("location=")]
    command = [*MODULE, "sweep", *args, "sae=none", "sweep.memory_budget=1", *entries]
    command += DDP if launch_ddp else []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "logs" / "sweep" / "runs").iterdir()
    return {row["run"]: row for row in json.loads((run_dir / "sweep.json").read_text())}


def test_sweep_on_two_processes_equals_one(tmp_path, checkpoint):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    one = sweep(False, checkpoint, tmp_path / "one")
    two = sweep(True, checkpoint, tmp_path / "two")
    assert sorted(two) == sorted(one) == ["a/resid_post_mlp/0", "b/resid_post_mlp/1"]
    for run, reference in one.items():
        assert two[run]["n_tokens"] == reference["n_tokens"] == N_CONTEXTS * (N_CTX - 1)
        for key, value in reference.items():
            if isinstance(value, float):  # values and standard errors alike
                assert two[run][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (run, key)


EXPLAIN = ["export.explain=true", "explain.n_latents=8", "explain.silent_contexts=4"]


@pytest.mark.parametrize("explain", [[], EXPLAIN], ids=["plain", "explain"])
def test_export_on_two_processes_equals_one(tmp_path, checkpoint, explain):
    """Each rank keeps its contexts' examples; the merge (top by activation, the reservoir by
    keys that depend on the event alone) and the summed statistics give one process's files;
    the explanations, built on rank 0 alone from the merged examples, too."""
    from tests.test_sweep import export_files

    args = [a for a in ARGS if not a.startswith("evals=")]
    args += [*SAE_AT_LAYER_1, f"sae.path={checkpoint}", "export.n_top=6", "export.window=[3,2]"]
    args += explain
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name, extra in (("one", []), ("two", DDP)):
        result = subprocess.run(
            [*MODULE, "export", *args, *extra, f"hydra.run.dir={tmp_path / name}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = export_files(tmp_path / "one"), export_files(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 5
    if explain:  # records equal to 1e-9 can still gzip to a byte more or less (1113.0 vs 1112.9)
        for files in (one, two):
            files["manifest.json"].pop("bytes_per_latent")
    for name in one:  # equal, up to the order of float64 sums
        assert_same(one[name], two[name], name)


def assert_same(a, b, where: str) -> None:
    """Equal JSON values, floats to 1e-9 relative."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where
