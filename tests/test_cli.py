"""The command line, end to end: real subprocesses for the main paths, in-process for errors."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.cli import main
from saelab.evals import EvalPlugin
from saelab.formats import save_sae
from saelab.sae.autoencoder import Autoencoder
from tests.conftest import TINY_OVERRIDES, openai_state_dict, write_openai_checkpoint

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
        assert math.isfinite(values[key]), key
    assert 0 < values["sparsity/l0"] <= 8  # a TopK SAE with k=8
    for key in ("reconstruction/nmse", "reconstruction/fvu", "downstream/kl"):
        assert values[key] >= 0, key
    assert 0 <= values["density/dead_fraction"] <= 1
    assert values["downstream/ce_clean"] > 0  # cross-entropy of a random model's predictions
    assert provenance["hook"] == "blocks.1.hook_resid_post"
    assert provenance["n_tokens"] == 32 * 15 and provenance["first_position_excluded"]
    assert "last position is left out" in provenance["definitions"]["downstream/kl"]
    # the console keeps saelab's table; Lightning's notes go to the run's log file only
    assert "GPU available" not in result.stderr + result.stdout
    assert "GPU available" in (run_dir / "eval.log").read_text()
    assert "results: " in result.stdout
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
    sae_options = (
        "sae: auto, file, gemmascope, none, openai, openai_v1, openai_v4, openai_v5_128k, "
        "openai_v5_32k, saelab, saelens, sparsify"
    )
    assert sae_options in hydra_help.stdout


def test_user_error_in_a_real_process_is_one_line_exit_2(tmp_path):
    result = saelab("eval", "model=random_gpt2", *FAST, "location=resid_mid", cwd=tmp_path)
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


@pytest.fixture
def bad_files(tmp_path: Path, topk_checkpoint: Path) -> dict[str, Path]:
    """Files that are wrong in one way each, for the table of bad inputs below."""
    files = {"topk": topk_checkpoint, "tmp": tmp_path}
    files["wide"] = write_openai_checkpoint(tmp_path / "wide.pt", 128, 96, k=4)
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(topk_checkpoint.read_bytes()[:3000])
    files["text"] = tmp_path / "notes.pt"
    files["text"].write_text("not a checkpoint")
    files["empty"] = tmp_path / "empty.txt"
    files["empty"].write_text("")
    nan = openai_state_dict(256, 64, k=8)
    nan["encoder.weight"][3, 5] = float("nan")
    files["nan"] = tmp_path / "nan.pt"
    torch.save(nan, files["nan"])
    inf = Autoencoder.random(256, 64, k=8)
    with torch.no_grad():
        inf.W_dec[0, 0] = float("inf")
    files["inf"] = save_sae(inf, tmp_path / "inf", {})[0]  # saelab's safetensors format
    files["bad_jsonl"] = tmp_path / "bad.jsonl"
    files["bad_jsonl"].write_text('{"text": "fine"}\n{"text": unquoted}\n')
    files["latin1"] = tmp_path / "latin1.txt"
    files["latin1"].write_bytes("Ein Café in Köln".encode("latin-1"))
    files["a_file"] = tmp_path / "a_file"
    files["a_file"].write_text("")
    for name, change in (
        ("int_encoder", lambda sd: sd.update({"encoder.weight": sd["encoder.weight"].long()})),
        ("string_k", lambda sd: sd["activation_state_dict"].update(k="8")),
        ("flat_encoder", lambda sd: sd.update({"encoder.weight": torch.zeros(64)})),
    ):
        state = openai_state_dict(256, 64, k=8)
        change(state)
        files[name] = tmp_path / f"{name}.pt"
        torch.save(state, files[name])
    files["no_weights"] = tmp_path / "saelens_without_weights"
    files["no_weights"].mkdir()
    (files["no_weights"] / "cfg.json").write_text('{"d_in": 64, "d_sae": 256}')
    checkpoints = tmp_path / "logs" / "train" / "runs" / "broken" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    return files


LOCAL_SAE = ["sae=file", "sae.path={topk}"]
EVAL = ["eval", "model=random_gpt2", *FAST, "layer=1", "logger=none"]
SWEEP = ["sweep", "model=random_gpt2", *FAST, "logger=none", "sae=none"]
TRAIN = [
    "train",
    "model=random_gpt2",
    *TINY_OVERRIDES,
    "data=random_tokens",
    "data.n_ctx=16",
    "data.batch_size=8",
    "layer=0",
    "train.n_tokens=4096",
    "train.batch_size=256",
    "train.buffer_contexts=64",
    "train.init_tokens=1024",
    "recipe.n_latents=256",
    "recipe.k=8",
    "logger=none",
]
# (command, overrides with {file} placeholders from `bad_files`, expected message regex)
BAD_INPUTS = [
    ("eval", ["location=resid_mid", *LOCAL_SAE], "unknown location 'resid_mid'"),
    ("eval", ["layer=one", *LOCAL_SAE], "layer must be an integer"),
    ("eval", ["layer=5", *LOCAL_SAE], "layer=5 is out of range"),
    (
        "eval",
        ["sae=openai_v5_32k", "location=mlp_post_act", "layer=0"],
        "v5_32k family has no SAE at mlp_post_act/0",
    ),
    ("eval", ["sae=file", "sae.path={wide}"], "reads 96-wide inputs but blocks.1.hook_mlp_out"),
    ("eval", ["location=mlp_post_act", *LOCAL_SAE], "reads 64-wide inputs but blocks.1.mlp"),
    ("eval", ["sae=file", "sae.path={tmp}/missing.pt"], "SAE checkpoint not found"),
    ("eval", ["sae=file"], "sae.path"),
    ("eval", ["sae=file", "sae.path={truncated}"], "truncated or corrupt"),
    ("eval", ["sae=file", "sae.path={text}"], "not a torch checkpoint|truncated or corrupt"),
    (
        "eval",
        ["sae=file", "sae.path=az://saelab-no-such-account-0/c/6.pt", "paths.cache_dir={tmp}/c"],
        "could not download .*offline\\?",
    ),
    ("eval", ["sae=file", "sae.path={nan}"], "W_enc has 1 non-finite value"),
    ("eval", ["sae=file", "sae.path={inf}"], "W_dec has 1 non-finite value"),
    ("eval", [*LOCAL_SAE, "data=text_files", "data.source.paths=[{empty}]"], "no text|less than"),
    ("eval", [*LOCAL_SAE, "data=text_files", "data.source.paths=[{bad_jsonl}]"], "jsonl:2 is not"),
    ("eval", [*LOCAL_SAE, "data=text_files", "data.source.paths=[{latin1}]"], "is not UTF-8"),
    ("eval", [*LOCAL_SAE, "data.n_tokens=32"], "less than one batch"),
    ("eval", [*LOCAL_SAE, "data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
    ("eval", [*LOCAL_SAE, "data.n_ctx=1"], "data.n_ctx=1 must be an integer >= 2"),
    ("eval", [*LOCAL_SAE, "data.n_tokens=-5"], "data.n_tokens=-5 must be a positive integer"),
    ("eval", [*LOCAL_SAE, "+evals.mine={{}}"], "unknown eval plugin 'mine'"),
    ("eval", [*LOCAL_SAE, "+evals.mine._target_=builtins.dict"], "not an EvalPlugin"),
    ("eval", ["sae=file", "sae.path={int_encoder}"], "encoder.weight: dtype torch.int64"),
    ("eval", ["sae=file", "sae.path={string_k}"], "TopK k='8' must be an integer from 1"),
    ("eval", ["sae=file", "sae.path={flat_encoder}"], "encoder.weight has shape \\(64,\\)"),
    ("eval", ["sae=saelens", "sae.path={no_weights}"], "SAELens.s format; its files are missing"),
    ("eval", [*LOCAL_SAE, "seed=abc"], "seed=abc must be an integer"),
    ("eval", [*LOCAL_SAE, "evals=5"], "Config group override must be a string or a list"),
    ("eval", [*LOCAL_SAE, "run_name=../../x"], "run_name=../../x must be a folder name"),
    ("eval", [*LOCAL_SAE, "run_name=/abs"], "run_name=/abs must be a folder name"),
    ("eval", [*LOCAL_SAE, "hydra.run.dir=/proc/x"], "hydra.run.dir=/proc/x cannot be written"),
    ("eval", [*LOCAL_SAE, "data.n_tokens=10000000000"], "needs about 74.5 GiB of memory"),
    ("eval", [*LOCAL_SAE, "precision=fp8"], "precision=fp8 is not one of 32, 32-true, tf32"),
    ("eval", [*LOCAL_SAE, "precision=tf32", "trainer.accelerator=cpu"], "tf32 needs a CUDA"),
    ("sweep", ["precision=tf32", "trainer.accelerator=cpu"], "tf32 needs a CUDA device"),
    ("train", ["precision=16"], "precision=16 is not one of"),
    ("sweep", ["sweep.memory_budget=abc"], "sweep.memory_budget=abc must be a positive number"),
    ("sweep", ["seed=abc"], "seed=abc must be an integer"),
    ("sweep", ["sweep.match=yes"], "sweep.match=yes must be true or false"),
    ("sweep", ["sweep.match=true", "evals=[downstream]"], "keep it in evals"),
    ("train", ["recipe.k=0"], "recipe.k=0 must be an integer from 1 to recipe.n_latents=256"),
    ("train", ["recipe.k=300"], "recipe.k=300 must be an integer from 1 to recipe.n_latents=256"),
    ("train", ["recipe.n_latents=0"], "recipe.n_latents=0 must be a positive integer"),
    ("train", ["train.batch_size=0"], "train.batch_size=0 must be a positive integer"),
    ("train", ["train.lr=-0.001"], "train.lr=-0.001 must be a positive number"),
    ("train", ["train.lr=0"], "train.lr=0 must be a positive number"),
    ("train", ["train.n_tokens=0"], "train.n_tokens=0 must be a positive integer"),
    ("train", ["train.n_tokens=100"], "less than one batch"),
    ("train", ["train.buffer_contexts=0"], "train.buffer_contexts=0 must be a positive"),
    ("train", ["train.init_tokens=0"], "train.init_tokens=0 must be a positive integer"),
    ("train", ["train.warmup_steps=-1"], "train.warmup_steps=-1 must be an integer >= 0"),
    ("train", ["train.decay_fraction=1.5"], "train.decay_fraction=1.5 must be a number in"),
    ("train", ["train.ema_decay=1.0"], "train.ema_decay=1.0 must be null or a number in"),
    ("train", ["train.val_tokens=-1"], "train.val_tokens=-1 must be an integer >= 0"),
    ("train", ["train.checkpoint_every_n_steps=-1"], "checkpoint_every_n_steps=-1 must be"),
    ("train", ["data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
    ("train", ["ckpt_path={text}"], "ckpt_path=.*notes.pt is not a training checkpoint"),
    ("train", ["ckpt_path={topk}"], "is not a training checkpoint \\(an SAE file\\?"),
    ("train", ["ckpt_path={tmp}/missing.ckpt"], "ckpt_path=.*missing.ckpt does not exist"),
    ("train", ["run_name=fresh", "resume=true"], "resume=true but there is no"),
    ("train", ["run_name=broken", "resume=true"], "last.ckpt is not a training checkpoint"),
    ("train", ["recipe.n_latents=2000000000"], "recipe.n_latents=2000000000 needs about"),
    (
        "train",
        ["train.activation_cache={a_file}/cache"],
        "train.activation_cache=.*a_file/cache cannot be written: .*a_file is not a directory",
    ),
    ("train", ["location=resid_mid"], "unknown location 'resid_mid'"),
    ("train", ["layer=[0,7]"], "layer=7 is out of range"),
    ("train", ["recipe.pre_bias_init=median"], "recipe.pre_bias_init must be"),
    ("train", ["data=text_files", "data.source.paths=[{latin1}]"], "is not UTF-8"),
]


@pytest.mark.parametrize(
    ("command", "overrides", "expected"),
    BAD_INPUTS,
    ids=[f"{command}-{' '.join(overrides)}" for command, overrides, _ in BAD_INPUTS],
)
def test_bad_inputs_exit_2_with_one_clear_line(
    command, overrides, expected, bad_files, monkeypatch, tmp_path, capsys
):
    base = {"eval": EVAL, "train": TRAIN, "sweep": SWEEP}[command]
    args = [*base, *(arg.format(**bad_files) for arg in overrides)]
    line = run_in_process(args, monkeypatch, tmp_path, capsys)
    assert re.search(expected, line), (overrides, line)
    for finished in ("metrics.json", "train.json", "sae.safetensors", "*.npy"):
        assert not list((tmp_path / "logs").rglob(finished)), finished


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

    def setup(self, run):
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


def test_a_real_training_checkpoint_passes_the_checkpoint_check(monkeypatch, tmp_path):
    """The check that rejects wrong `ckpt_path` files accepts what `saelab train` writes."""
    from saelab.tasks.checks import check_training_checkpoint

    monkeypatch.chdir(tmp_path)
    args = [
        *TRAIN,
        "train.val_every_n_steps=0",
        "train.checkpoint_every_n_steps=5",
        "trainer.enable_progress_bar=false",
    ]
    main([*args, "run_name=first"])
    checkpoints = tmp_path / "logs" / "train" / "runs" / "first" / "checkpoints"
    written = sorted(checkpoints.glob("*.ckpt"))
    assert len(written) == 2  # the periodic one and last.ckpt
    for ckpt in written:
        check_training_checkpoint(ckpt)
    # and a run continued from it with ckpt_path= gets past the check and finishes
    main([*args, "run_name=second", f"ckpt_path={checkpoints / 'last.ckpt'}"])
    assert (tmp_path / "logs" / "train" / "runs" / "second" / "train.json").is_file()


def test_ctrl_c_while_writing_is_one_line_and_leaves_nothing_complete(
    monkeypatch, tmp_path, capsys, topk_checkpoint
):
    from saelab.evals import results

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "save", interrupted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*EVAL, "sae=file", f"sae.path={topk_checkpoint}", "evals=[reconstruction]"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and "Traceback" not in err
    assert "saelab: interrupted; rerun with resume=true" in err
    assert not list(tmp_path.rglob("metrics.json"))
