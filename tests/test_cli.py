"""The command line, end to end: real subprocesses for the main paths, in-process for errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.cli import main
from saelab.evals import EvalPlugin
from tests.conftest import TINY_OVERRIDES, write_openai_checkpoint

FAST = [
    *TINY_OVERRIDES,
    "data=random_tokens",
    "data.n_tokens=512",
    "data.batch_size=4",
    "data.n_ctx=16",
]


def saelab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "saelab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


def test_eval_end_to_end_writes_metrics_and_offline_wandb_run(tmp_path, topk_checkpoint):
    result = saelab(
        "eval",
        "model=random_gpt2",
        *FAST,
        "layer=1",
        "location=resid_post_mlp",
        "sae=file",
        f"sae.path={topk_checkpoint}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    values, provenance = metrics["metrics"], metrics["provenance"]
    for key in (
        "reconstruction/nmse",
        "reconstruction/fvu",
        "sparsity/l0",
        "downstream/ce_loss_recovered",
        "downstream/kl",
        "density/dead_fraction",
    ):
        assert key in values and values[key] == values[key]  # present and not NaN
    assert values["sparsity/l0"] <= 8
    assert provenance["hook"] == "blocks.1.hook_resid_post"
    assert provenance["n_tokens"] == 32 * 15 and provenance["first_position_excluded"]
    assert len(provenance["sae_sha256"]) == 64
    assert (run_dir / "config.yaml").is_file() and (run_dir / "latent_density.npy").is_file()
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")  # exactly one W&B run
    (records,) = offline_run.glob("*.wandb")
    logged = records.read_bytes()  # config, summary and the density histogram are in there
    for key in (b"reconstruction/nmse", b"density/log10_frequency", b"sae_sha256", b"_target_"):
        assert key in logged, key
    assert "reconstruction/nmse" in result.stdout and str(run_dir.name) in result.stdout


def test_multirun_over_layers_and_locations(tmp_path, topk_checkpoint):
    result = saelab(
        "eval",
        "-m",
        "model=random_gpt2",
        *FAST,
        "logger=csv",
        "layer=0,1",
        "location=resid_post_mlp,resid_delta_attn",
        "evals=[reconstruction]",
        "sae=file",
        f"sae.path={topk_checkpoint}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    hooks = {
        json.loads((d / "metrics.json").read_text())["provenance"]["hook"]
        for d in run_dirs(tmp_path / "logs" / "eval" / "multiruns")
    }
    assert hooks == {
        f"blocks.{layer}.{name}"
        for layer in (0, 1)
        for name in ("hook_resid_post", "hook_attn_out")
    }
    (summary,) = (tmp_path / "logs" / "eval" / "multiruns").glob("*/sweep.json")
    rows = json.loads(summary.read_text())
    assert sorted(row["run"] for row in rows) == ["0", "1", "2", "3"]
    assert {row["hook"] for row in rows} == hooks
    assert all(row["reconstruction/nmse"] >= 0 for row in rows)


def test_help(tmp_path):
    top = saelab("--help", cwd=tmp_path)
    assert top.returncode == 0 and "eval" in top.stdout and "commands" in top.stdout
    hydra_help = saelab("eval", "--help", cwd=tmp_path)
    assert hydra_help.returncode == 0
    sae_options = "sae: file, none, openai_v1, openai_v4, openai_v5_128k, openai_v5_32k"
    assert sae_options in hydra_help.stdout


def test_user_error_in_a_real_process_is_one_line_exit_2(tmp_path):
    result = saelab("eval", "model=random_gpt2", *FAST, "location=resid_pre", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("saelab: error: unknown location")


def run_in_process(args, monkeypatch, tmp_path, capsys) -> str:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("saelab: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_command(monkeypatch, tmp_path, capsys):
    assert "unknown command 'evaluate'" in run_in_process(
        ["evaluate"], monkeypatch, tmp_path, capsys
    )


def bad_input_cases(tmp_path: Path, topk: Path) -> list[tuple[list[str], str]]:
    wide = write_openai_checkpoint(tmp_path / "wide.pt", 128, 96, k=4)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(topk.read_bytes()[:3000])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    local = ["sae=file", f"sae.path={topk}"]
    return [
        (["location=resid_pre", *local], "unknown location 'resid_pre'"),
        (["layer=5", *local], "layer=5 is out of range"),
        (
            ["sae=openai_v5_32k", "location=mlp_post_act", "layer=0"],
            "v5_32k SAEs have no location 'mlp_post_act'",
        ),
        (["sae=file", f"sae.path={wide}"], "reads 96-wide inputs but blocks.1.hook_mlp_out"),
        (["location=mlp_post_act", *local], "reads 64-wide inputs but blocks.1.mlp.hook_post"),
        (["sae=file", f"sae.path={tmp_path / 'missing.pt'}"], "SAE checkpoint not found"),
        (["sae=file"], "sae.path"),
        (["sae=file", f"sae.path={truncated}"], "truncated or corrupt"),
        (["sae=file", f"sae.path={text}"], "not a torch checkpoint|truncated or corrupt"),
        (
            [
                "sae=file",
                "sae.path=az://saelab-no-such-account-0/c/6.pt",
                f"paths.cache_dir={tmp_path / 'cache'}",
            ],
            "could not download .*offline\\?",
        ),
        ([*local, "data=text_files", f"data.source.paths=[{empty}]"], "no text|less than one"),
        ([*local, "data.n_tokens=32"], "less than one batch"),
        ([*local, "+evals.mine={}"], "unknown eval plugin 'mine'"),
        ([*local, "+evals.mine._target_=builtins.dict"], "not an EvalPlugin"),
    ]


def test_bad_inputs_exit_2_with_one_clear_line(monkeypatch, tmp_path, capsys, topk_checkpoint):
    import re

    base = ["eval", "model=random_gpt2", *FAST, "layer=1", "logger=none"]
    for overrides, expected in bad_input_cases(tmp_path, topk_checkpoint):
        line = run_in_process([*base, *overrides], monkeypatch, tmp_path, capsys)
        assert re.search(expected, line), (overrides, line)
    assert not list((tmp_path / "logs").rglob("metrics.json"))


def test_relu_sae_on_mlp_activations_in_process(monkeypatch, tmp_path, relu_mlp_checkpoint):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "eval",
            "model=random_gpt2",
            *FAST,
            "layer=0",
            "location=mlp_post_act",
            "logger=none",
            "sae=file",
            f"sae.path={relu_mlp_checkpoint}",
        ]
    )
    (run_dir,) = run_dirs(tmp_path / "logs")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["sparsity/l0"] > 0 and torch.isfinite(torch.tensor(metrics["downstream/kl"]))


class MaxActivation(EvalPlugin):
    """The README's example plugin."""

    def setup(self, sae):
        self.add_state("max", default=torch.tensor(0.0), dist_reduce_fx="max")

    def update(self, batch):
        _, values = batch.active()
        if len(values):
            self.max = torch.maximum(self.max, values.max())

    def compute(self):
        return {"max_activation/value": self.max.item()}


def install_entry_point(root: Path, monkeypatch) -> None:
    """A minimal installed distribution declaring a `saelab.evals` entry point."""
    dist = root / "saelab_test_plugin-0.1.dist-info"
    dist.mkdir()
    metadata = "Metadata-Version: 2.1\nName: saelab-test-plugin\nVersion: 0.1\n"
    (dist / "METADATA").write_text(metadata)
    (dist / "entry_points.txt").write_text(
        "[saelab.evals]\nmaxact = tests.test_cli:MaxActivation\n"
    )
    monkeypatch.syspath_prepend(str(root))


@pytest.mark.parametrize("how", ["target", "entry_point"])
def test_user_plugin(monkeypatch, tmp_path, topk_checkpoint, how):
    if how == "target":
        select = "+evals.maxact._target_=tests.test_cli.MaxActivation"
    else:
        install_entry_point(tmp_path, monkeypatch)
        select = "+evals.maxact={}"
    monkeypatch.chdir(tmp_path)
    main(
        [
            "eval",
            "model=random_gpt2",
            *FAST,
            "layer=1",
            "logger=none",
            "evals=[density]",
            select,
            "sae=file",
            f"sae.path={topk_checkpoint}",
        ]
    )
    (run_dir,) = run_dirs(tmp_path / "logs")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["max_activation/value"] > 0 and "density/dead_fraction" in metrics
