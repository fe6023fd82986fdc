"""Training: recovery of a known sparse dictionary, AuxK, resume, and the CLI end to end."""

import json
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch

from saelab.cli import main
from saelab.evals.base import RunContext
from saelab.sae.autoencoder import Autoencoder
from saelab.sae.checkpoints import load
from saelab.sources.places import Place
from saelab.train.module import HookSAE, SAETraining
from saelab.train.recipes import ReluL1, TopK, geometric_median
from tests.conftest import TINY_OVERRIDES

SYN = Place("resid_post_mlp", 0)  # where the synthetic activations stand

D, N_TRUE = 64, 256


class SparseDictionary:
    """Samples that are sparse non-negative combinations of N_TRUE unit directions in D dims."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.directions = torch.randn(N_TRUE, D, generator=g)
        self.directions /= self.directions.norm(dim=-1, keepdim=True)

    def batch(self, size: int, g: torch.Generator) -> torch.Tensor:
        active = torch.rand(size, N_TRUE, generator=g) < 4 / N_TRUE
        return (active * (0.5 + torch.rand(size, N_TRUE, generator=g))) @ self.directions

    def stream(self, n_batches: int, size: int, seed: int = 1) -> "Batches":
        g = torch.Generator().manual_seed(seed)
        return Batches([{SYN.hook: self.batch(size, g)} for _ in range(n_batches)])

    def recovered(self, W_dec: torch.Tensor) -> float:
        """Fraction of true directions matched by some decoder row with cosine > 0.9."""
        rows = W_dec / W_dec.norm(dim=-1, keepdim=True)
        return (self.directions @ rows.T).max(dim=1).values.gt(0.9).float().mean().item()


class Batches:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def fit(recipe, data: SparseDictionary, steps: int, lr: float = 3e-3, prepare=None):
    sample = data.batch(4096, torch.Generator().manual_seed(99))
    sae, scale = recipe.build(D, sample, seed=0)
    if prepare:
        prepare(sae)
    module = SAETraining(
        None,
        [HookSAE(RunContext.of_sae(sae, place=SYN), scale)],
        recipe,
        lr=lr,
        warmup_steps=20,
        total_steps=steps,
        histogram_every_n_steps=0,
    )
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=data.stream(steps, 1024))
    return sae


def test_topk_recovers_the_true_directions():
    data = SparseDictionary()
    sae = fit(
        TopK(n_latents=512, k=8, k_aux=64, dead_tokens=20_000, normalize=False), data, steps=800
    )
    assert data.recovered(sae.W_dec.detach()) >= 0.9
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(512), atol=1e-5)


def test_relu_l1_recovers_most_directions():
    data = SparseDictionary()
    sae = fit(ReluL1(n_latents=512, l1_coef=0.05), data, steps=800)
    assert data.recovered(sae.W_dec.detach()) >= 0.75


def test_relu_l1_loss_is_openais_v1_v4_loss():
    """Per token mean((x_hat - x)^2) / mean(x^2) + l1_coef * sum(latents) / |x|, averaged over
    tokens (OpenAI's loss.py), written out token by token; inputs far from zero-mean."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 16, generator=g) + 3.0
    recipe = ReluL1(n_latents=32, l1_coef=0.03)
    sae, _ = recipe.build(16, torch.randn(256, 16, generator=g) + 3.0, seed=0)
    with torch.no_grad():
        sae.latent_bias.copy_(0.1 * torch.randn(32, generator=g))
    W_enc, W_dec = sae.W_enc.detach().double(), sae.W_dec.detach().double()
    b_pre, b_lat = sae.pre_bias.detach().double(), sae.latent_bias.detach().double()
    per_token = []
    for row in x.double():
        f = torch.clamp(W_enc @ (row - b_pre) + b_lat, min=0)
        x_hat = W_dec.T @ f + b_pre
        nmse = ((x_hat - row) ** 2).sum() / (row**2).sum()  # the 1/d of both means cancels
        per_token.append(nmse + 0.03 * f.sum() / row.norm())
    expected = torch.stack(per_token).mean().item()
    for mse_scale in (1.0, 123.0):  # TopK's variance scale plays no part
        out = recipe.loss(sae, x, mse_scale)
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_auxk_revives_latents_dead_at_initialisation():
    data = SparseDictionary()
    fresh = data.batch(4096, torch.Generator().manual_seed(7))

    def quiet_half(sae):  # latents 256+ start with tiny encoder rows: they never win the top k
        with torch.no_grad():
            sae.W_enc[256:] *= 0.1

    def alive_in_quiet_half(sae) -> float:
        with torch.no_grad():
            latents, _ = sae.encode_sparse(fresh)
        fired = torch.bincount(latents.indices[latents.values > 0], minlength=512)
        return fired[256:].gt(0).float().mean().item()

    with_aux = fit(
        TopK(n_latents=512, k=8, k_aux=64, dead_tokens=2048, normalize=False),
        data,
        400,
        prepare=quiet_half,
    )
    without = fit(
        TopK(n_latents=512, k=8, auxk_coef=0.0, dead_tokens=2048, normalize=False),
        data,
        400,
        prepare=quiet_half,
    )
    assert alive_in_quiet_half(with_aux) > 0.6
    assert alive_in_quiet_half(with_aux) > 2 * alive_in_quiet_half(without)


def test_auxk_reads_the_dead_mask_after_this_batchs_firing_is_recorded():
    """Latent 4 was dead but fires in this batch: not dead for this batch's AuxK. Latent 5
    crosses `dead_tokens` exactly in this batch: dead for it. AuxK written out by hand."""
    g = torch.Generator().manual_seed(0)
    n, d, n_tokens, dead_tokens = 6, 4, 8, 1000
    sae, _ = TopK(n_latents=n, k=1, normalize=False).build(
        d, torch.randn(64, d, generator=g), seed=0
    )
    with torch.no_grad():
        sae.latent_bias.copy_(torch.tensor([0.0, 0, 0, 0, 10.0, 0.5]))  # 4 always wins top-1
        sae.W_enc[5] *= 0.01  # 5 never wins, but its pre-activation stays positive
        sae.stats_last_nonzero.copy_(
            torch.tensor([0, 0, 0, 0, dead_tokens + 100, dead_tokens - n_tokens + 1])
        )
    x = torch.randn(n_tokens, d, generator=g)
    recipe = TopK(k=1, k_aux=2, auxk_coef=0.5, dead_tokens=dead_tokens, normalize=False)
    out = recipe.loss(sae, x, 1.0)

    W_enc, W_dec = sae.W_enc.detach().double(), sae.W_dec.detach().double()
    b_pre, b_lat, xd = sae.pre_bias.detach().double(), sae.latent_bias.detach().double(), x.double()
    pre = (xd - b_pre) @ W_enc.T + b_lat
    assert (pre.argmax(-1) == 4).all() and (pre[:, 5] > 0).all()
    residual = xd - (pre[:, 4:5].clamp_min(0) * W_dec[4] + b_pre)
    aux = pre[:, 5:6].clamp_min(0) * W_dec[5]  # only latent 5 is dead; the other pick is 0
    expected = ((aux - residual) ** 2).mean() / ((residual - residual.mean(0)) ** 2).mean()
    assert out.logs["auxk_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert sae.stats_last_nonzero.tolist() == [n_tokens] * 4 + [0, dead_tokens + 1]
    assert out.fired_counts.tolist() == [0, 0, 0, 0, n_tokens, 0]


def test_a_training_step_never_waits_for_the_device(monkeypatch):
    """No `.item()`, `bool(t)` or `int(t)` in a TopK step with AuxK (the CPU stand-in for
    CUDA's sync debug mode), except the finite-loss check at its interval."""
    data = SparseDictionary()
    recipe = TopK(n_latents=512, k=8, k_aux=64, dead_tokens=1024, normalize=False)
    sae, scale = recipe.build(D, data.batch(4096, torch.Generator().manual_seed(9)), 0)
    with torch.no_grad():
        sae.stats_last_nonzero[:256] = 5000  # half dead: the AuxK path runs
    module = SAETraining(
        None,
        [HookSAE(RunContext.of_sae(sae, place=SYN), scale)],
        recipe,
        total_steps=10,
        finite_check_every_n_steps=5,
        histogram_every_n_steps=0,
    )
    original, steps = SAETraining.training_step, []

    def guarded(self, batch, batch_idx):
        def sync(*args):
            raise AssertionError(f"host sync in training step {self.global_step}")

        with monkeypatch.context() as m:
            if (self.global_step + 1) % 5:  # steps 4 and 9 check the loss
                for name in ("item", "__bool__", "__int__", "tolist"):
                    m.setattr(torch.Tensor, name, sync)
            loss = original(self, batch, batch_idx)
        steps.append(self.global_step)
        return loss

    monkeypatch.setattr(SAETraining, "training_step", guarded)
    trainer = L.Trainer(
        max_steps=10,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=data.stream(10, 1024))
    assert steps == list(range(10))
    assert sae.stats_last_nonzero[:256].max() < 5000  # statistics were updated every step


def test_geometric_median_resists_outliers():
    points = torch.zeros(101, 3)
    points[:10] = 1000.0  # outliers drag the mean, not the median
    assert geometric_median(points).norm() < 1.0 < points.mean(0).norm()


TRAIN = [
    "train",
    "model=random_gpt2",
    *TINY_OVERRIDES,
    "data=random_tokens",
    "data.n_ctx=16",
    "data.batch_size=8",
    "location=resid_post_mlp",
    "train.n_tokens=12000",
    "train.batch_size=256",
    "train.buffer_contexts=256",
    "recipe.n_latents=256",
    "recipe.k=8",
    "train.val_tokens=2048",
    "train.val_every_n_steps=20",
    "train.checkpoint_every_n_steps=10",
    "train.init_tokens=2048",
    "train.warmup_steps=5",
    "recipe.dead_tokens=2000",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def test_train_two_layers_from_the_cli_and_evaluate_the_saved_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "saelab", *TRAIN, "layer=[0,1]", "run_name=two"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "logs" / "train" / "runs" / "two"
    summary = json.loads((run_dir / "train.json").read_text())
    assert set(summary["saes"]) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    # (12000 + 2048) // 16 = 878 contexts, 128 held out; buffers of 256, 256, 238 contexts
    # give 15, 15, 13 batches of 256 tokens (15 tokens per context after the first position)
    assert summary["provenance"]["steps"] == 43
    assert summary["provenance"]["n_tokens"] == 43 * 256
    hook = "blocks.1.hook_resid_post"
    logged = summary["saes"][hook]["validation"]
    sae_pt = run_dir / "saes" / hook / "sae.pt"
    saelab_format = load(path=str(run_dir / "saes" / hook / "sae.safetensors")).sae
    assert torch.equal(load(path=str(sae_pt)).sae.W_dec, saelab_format.W_dec)

    # the OpenAI-format file, evaluated on the same held-out tokens, gives the logged metrics
    main(
        [
            "eval",
            "model=random_gpt2",
            *TINY_OVERRIDES,
            "data=random_tokens",
            "data.n_ctx=16",
            "data.batch_size=8",
            "data.n_tokens=2048",
            "layer=1",
            "location=resid_post_mlp",
            "sae=file",
            f"sae.path={sae_pt}",
            "evals=[reconstruction,density]",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ]
    )
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    for key in (
        "reconstruction/nmse",
        "reconstruction/fvu",
        "sparsity/l0",
        "density/dead_fraction",
    ):
        assert evaluated[key] == pytest.approx(logged[key], rel=1e-4, abs=1e-6), key


def final_weights(run_dir):
    return load(path=str(run_dir / "saes" / "blocks.0.hook_resid_post" / "sae.pt")).sae


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*TRAIN, "layer=0", "train.val_every_n_steps=0"]
    main([*args, "run_name=whole"])

    original = SAETraining.training_step

    def crash_at_step_25(self, batch, batch_idx):
        if self.global_step == 25:
            raise RuntimeError("simulated kill")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SAETraining, "training_step", crash_at_step_25)
    with pytest.raises(SystemExit):  # Hydra reports the crash and exits 1
        main([*args, "run_name=killed"])
    killed = tmp_path / "logs" / "train" / "runs" / "killed"
    assert (killed / "checkpoints" / "last.ckpt").is_file()
    assert not (killed / "saes").exists()  # nothing that looks finished
    monkeypatch.setattr(SAETraining, "training_step", original)
    main([*args, "run_name=killed", "resume=true"])

    whole = final_weights(tmp_path / "logs" / "train" / "runs" / "whole")
    resumed = final_weights(killed)
    for name in ("W_enc", "W_dec", "pre_bias", "latent_bias", "stats_last_nonzero"):
        assert torch.allclose(getattr(resumed, name), getattr(whole, name), atol=1e-6), name


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN, "layer=0", "run_name=fresh", "resume=true"])
    assert exit_info.value.code == 2
    assert "resume=true but there is no" in capsys.readouterr().err


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    original = TopK.loss
    calls = {"n": 0}

    def blows_up(self, sae, x, mse_scale, *record):
        calls["n"] += 1
        out = original(self, sae, x, mse_scale, *record)
        if calls["n"] > 13:  # training steps 0-12 are fine
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(TopK, "loss", blows_up)
    with pytest.raises(SystemExit) as exit_info:
        main([*TRAIN, "layer=0", "train.val_every_n_steps=0", "run_name=nan"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "non-finite loss at step 13 for blocks.0.hook_resid_post" in err and "Traceback" not in err
    )
    checkpoints = tmp_path / "logs" / "train" / "runs" / "nan" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert not list(checkpoints.glob("*.partial"))


def test_training_from_the_activation_cache_matches_training_live(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [*TRAIN, "layer=0", "train.val_every_n_steps=0"]
    main([*args, "run_name=live"])
    cache = tmp_path / "acts"
    main([*args, "run_name=cached", f"train.activation_cache={cache}"])
    assert "writing an activation cache of" in capsys.readouterr().out
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["hooks"] == {"blocks.0.hook_resid_post": 64}
    rows = manifest["n_contexts"] * manifest["tokens_per_context"]
    assert np.load(cache / "blocks.0.hook_resid_post.npy", mmap_mode="r").shape == (rows, 64)
    main([*args, "run_name=again", f"train.activation_cache={cache}"])  # reuses the cache
    assert "writing an activation cache" not in capsys.readouterr().out
    runs = tmp_path / "logs" / "train" / "runs"
    live, cached, again = (final_weights(runs / name) for name in ("live", "cached", "again"))
    assert torch.allclose(cached.W_dec, live.W_dec, atol=1e-6)
    assert torch.equal(cached.W_dec, again.W_dec)
    # a cache written for another model or other data is refused, not trained on
    from tests.test_cli import run_in_process

    for override, field in (("model.seed=1", "model"), ("data=bundled", "data")):
        line = run_in_process(
            [*args, "run_name=other", f"train.activation_cache={cache}", override],
            monkeypatch, tmp_path, capsys,
        )  # fmt: skip
        assert f"was written for {field}=" in line and "another train.activation_cache" in line
    # a damaged cache is one line that says to rewrite it, not a traceback or wrong training
    array = cache / "blocks.0.hook_resid_post.npy"
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    line = run_in_process([*args, "run_name=cut", f"train.activation_cache={cache}"],
                          monkeypatch, tmp_path, capsys)  # fmt: skip
    assert "hook_resid_post.npy is truncated or corrupt" in line and "delete" in line
    (cache / "manifest.json").write_text('{"format": "saelab-activ')
    line = run_in_process([*args, "run_name=cut2", f"train.activation_cache={cache}"],
                          monkeypatch, tmp_path, capsys)  # fmt: skip
    assert "manifest.json is truncated or corrupt" in line


def test_an_activation_cache_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_in_process

    line = run_in_process(
        [*TRAIN, "layer=0", "train.activation_cache=/proc/saelab_cache"], monkeypatch, tmp_path,
        capsys,
    )  # fmt: skip
    assert "train.activation_cache=/proc/saelab_cache cannot be written" in line


def test_ema_weights_are_what_is_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*TRAIN, "layer=0", "train.val_every_n_steps=0"]
    main([*args, "run_name=plain"])
    main([*args, "run_name=ema", "train.ema_decay=0.9"])
    runs = tmp_path / "logs" / "train" / "runs"
    plain, ema = final_weights(runs / "plain"), final_weights(runs / "ema")
    # same run, averaged weights: close to the last weights but not equal to them
    assert not torch.equal(plain.W_enc, ema.W_enc)
    assert (
        torch.nn.functional.cosine_similarity(plain.W_enc.flatten(), ema.W_enc.flatten(), dim=0)
        > 0.9
    )


def test_auxk_reads_the_dead_mask_after_this_batch_updates_the_statistics():
    """OpenAI's order: latent 5 crosses `dead_tokens` with this batch (8 + 4 > 10) and is dead
    for this batch's AuxK; a latent that was dead but fires now is not. Expected value from
    the definitions written out here."""
    g = torch.Generator().manual_seed(0)
    sae = Autoencoder.random(8, 4, k=2, seed=3, normalize=False)
    with torch.no_grad():
        sae.pre_bias.copy_(0.1 * torch.randn(4, generator=g))
        sae.latent_bias.copy_(0.1 * torch.randn(8, generator=g))
    x = torch.randn(4, 4, generator=g)
    pre = (x - sae.pre_bias) @ sae.W_enc.T + sae.latent_bias
    top = pre.topk(2, dim=-1)
    fires = torch.zeros(8, dtype=torch.bool)
    fires[top.indices[top.values > 0]] = True
    assert not fires[5] and top.values[0, 0] > 0, "pick another seed"
    revived = top.indices[0, 0]  # silent for long, but fires in this batch
    sae.stats_last_nonzero.copy_(torch.tensor([0, 0, 0, 0, 0, 8, 0, 0]))
    sae.stats_last_nonzero[revived] = 50
    before = sae.stats_last_nonzero.clone()

    out = TopK(k=2, k_aux=2, auxk_coef=1.0, dead_tokens=10, normalize=False).loss(sae, x, 1.0)

    after = torch.where(fires, 0, before + 4)
    assert torch.equal(sae.stats_last_nonzero, after)
    dead = after > 10
    assert dead[5] and not dead[revived] and not dead[fires].any()
    latents = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp_min(0))
    residual = x - (latents @ sae.W_dec + sae.pre_bias)
    masked = pre.masked_fill(~dead, float("-inf"))
    aux = masked.topk(2, dim=-1)
    aux_latents = torch.zeros_like(pre).scatter(-1, aux.indices, aux.values.clamp_min(0))
    aux_recons = aux_latents @ sae.W_dec
    expected = (aux_recons - residual).pow(2).mean() / (residual - residual.mean(0)).pow(2).mean()
    assert out.logs["auxk_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ranks_read_disjoint_contexts_whose_union_is_one_process(tiny_model):
    from saelab.data.activations import ModelActivations

    tokens = torch.arange(10 * 16).reshape(10, 16) % 512
    hooks = {"blocks.0.hook_resid_post": 0}

    def contexts_read(rank: int, world: int) -> list[int]:
        stream = ModelActivations(tiny_model, hooks, tokens, 60, buffer_contexts=3, seed=1)
        if world > 1:
            stream.shard(rank, world)
        n_buffers = len(stream.buffer_batches())
        return [
            int(row[0]) // 16 for i in range(n_buffers) for row in stream.tokens[stream.contexts(i)]
        ]

    one = contexts_read(0, 1)
    ranks = [contexts_read(rank, 2) for rank in (0, 1)]
    assert sorted(one) == list(range(10)) and len(ranks[0]) == len(ranks[1]) == 5
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(one)


def test_ddp_training_counts_every_rank(tmp_path):
    """Two CPU processes: half the steps each, tokens seen summed over both ranks."""
    args = [*TRAIN, "layer=0", "train.val_every_n_steps=0", "train.n_tokens=8192"]
    env = {**__import__("os").environ, "PYTHONWARNINGS": "ignore"}
    for name, extra in (("one", []), ("two", ["trainer=ddp", "trainer.devices=2"])):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "saelab",
                *args,
                f"run_name={name}",
                "trainer.accelerator=cpu",
                *extra,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
    runs = tmp_path / "logs" / "train" / "runs"
    one, two = (
        json.loads((runs / n / "train.json").read_text())["provenance"] for n in ("one", "two")
    )
    # 512 contexts of 15 tokens: buffers of 256 give 15 + 15 batches; per rank 256 -> 15
    assert (one["steps"], two["steps"]) == (30, 15)
    assert one["n_tokens"] == two["n_tokens"] == 30 * 256


# each recipe's overrides for the TRAIN run (JumpReLU has no k; Matryoshka gets three groups)
RECIPES = {
    "topk": [],
    "batchtopk": ["recipe=batchtopk"],
    "matryoshka": ["recipe=matryoshka", "recipe.group_sizes=[32,64,160]"],
    "multi_topk": ["recipe=multi_topk"],
    "jumprelu": ["recipe=jumprelu", "recipe.l0_coef=0.01"],
}


def train_args(recipe: str) -> list[str]:
    drop = ("recipe.k=",) if recipe == "jumprelu" else ()
    return [a for a in TRAIN if not a.startswith(drop)] + RECIPES[recipe]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resume_after_a_real_kill_is_exact(tmp_path, recipe):
    """SIGKILL a training subprocess after its first periodic checkpoint (two hooks), resume
    with resume=true: every saved tensor equals an uninterrupted run's, bit for bit, for every
    recipe (BatchTopK's running threshold and JumpReLU's log-thresholds are training state)."""
    import os
    import signal
    import time

    from safetensors.torch import load_file

    args = [sys.executable, "-m", "saelab", *train_args(recipe), "layer=[0,1]"]
    args.append("train.val_every_n_steps=0")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = tmp_path / "logs" / "train" / "runs"
    subprocess.run([*args, "run_name=whole"], cwd=tmp_path, env=env, check=True, timeout=600)
    process = subprocess.Popen([*args, "run_name=killed"], cwd=tmp_path, env=env)
    checkpoints = runs / "killed" / "checkpoints"
    while not list(checkpoints.glob("*step=10.ckpt")) and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (runs / "killed" / "saes").exists()  # killed mid-run
    subprocess.run(
        [*args, "run_name=killed", "resume=true"], cwd=tmp_path, env=env, check=True, timeout=600
    )
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        whole = load_file(runs / "whole" / "saes" / hook / "sae.safetensors")
        resumed = load_file(runs / "killed" / "saes" / hook / "sae.safetensors")
        assert "stats_last_nonzero" in whole
        assert ("threshold" in whole) == (recipe in ("batchtopk", "matryoshka", "jumprelu"))
        assert whole.keys() == resumed.keys()
        for name in whole:
            assert torch.equal(resumed[name], whole[name]), (hook, name)
