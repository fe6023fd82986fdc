"""The BatchTopK, Matryoshka, Multi-TopK and JumpReLU recipes against their definitions written
out here on small tensors (plain Python loops in float64, never the recipe's own code), and
what each saves."""

from __future__ import annotations

import math

import pytest
import torch

from saelab.config import compose
from saelab.errors import UserError
from saelab.formats import saelab as saelab_format
from saelab.formats import save_sae
from saelab.tasks.checks import check_train
from saelab.train.recipes import (
    BatchTopK,
    JumpReLU,
    LogThresholdAutoencoder,
    Matryoshka,
    MultiTopK,
    default_groups,
)


def random_sae(recipe, n_inputs: int, seed: int = 0):
    """The recipe's untrained SAE with random biases (so nothing is centred by accident)."""
    g = torch.Generator().manual_seed(seed)
    sae = recipe.new_sae(n_inputs, seed)
    with torch.no_grad():
        sae.pre_bias.copy_(0.2 * torch.randn(n_inputs, generator=g))
        sae.latent_bias.copy_(0.2 * torch.randn(sae.n_latents, generator=g))
    return sae


def weights(sae):
    """(W_enc, W_dec, pre_bias, latent_bias) as float64 copies."""
    return [
        t.detach().double().clone() for t in (sae.W_enc, sae.W_dec, sae.pre_bias, sae.latent_bias)
    ]


def pre_activations(sae, x):
    """pre[i][j] = W_enc[j] . (x[i] - pre_bias) + latent_bias[j], as nested lists."""
    W_enc, _, b_pre, b_lat = weights(sae)
    return [
        [float(W_enc[j] @ (row - b_pre) + b_lat[j]) for j in range(sae.n_latents)]
        for row in x.double()
    ]


def mse_of(latents, sae, x) -> float:
    """mean over tokens and dimensions of (W_dec^T latents + pre_bias - x)^2."""
    _, W_dec, b_pre, _ = weights(sae)
    total = 0.0
    for row, acts in zip(x.double(), latents, strict=True):
        recons = b_pre + sum(a * W_dec[j] for j, a in enumerate(acts) if a)
        total += float(((recons - row) ** 2).sum())
    return total / (len(x) * x.shape[1])


# -- BatchTopK -------------------------------------------------------------------------------
def batch_selection(pre, k):
    """The k x tokens largest positive values over the whole batch, by sorting every entry."""
    entries = sorted(
        ((v, i, j) for i, row in enumerate(pre) for j, v in enumerate(row) if v > 0), reverse=True
    )
    chosen = {(i, j) for _, i, j in entries[: k * len(pre)]}
    return [
        [v if (i, j) in chosen else 0.0 for j, v in enumerate(row)] for i, row in enumerate(pre)
    ]


def test_batchtopk_chooses_across_the_batch_and_moves_its_threshold():
    g = torch.Generator().manual_seed(1)
    recipe = BatchTopK(n_latents=8, k=2, threshold_lr=0.25, auxk_coef=0.0, normalize=False)
    sae = random_sae(recipe, 4)
    with torch.no_grad():
        sae.W_enc[:, :] *= 2
        sae.W_enc[0] *= 4  # token 0 gets more than its share of the batch's choices
        sae.threshold.fill_(0.5)
    x = torch.randn(5, 4, generator=g)
    pre = pre_activations(sae, x)
    latents = batch_selection(pre, 2)
    per_token = [sum(a > 0 for a in row) for row in latents]
    assert sum(per_token) == 10 and len(set(per_token)) > 1, "a batch choice, not per token"
    kept = [a for row in latents for a in row if a > 0]

    out = recipe.loss(sae, x, 3.0)

    assert out.loss.item() == pytest.approx(3.0 * mse_of(latents, sae, x), rel=1e-5)
    expected_counts = [sum(latents[i][j] > 0 for i in range(5)) for j in range(8)]
    assert out.fired_counts.tolist() == expected_counts
    new = 0.75 * 0.5 + 0.25 * min(kept)
    assert sae.threshold.tolist() == pytest.approx([new] * 8, rel=1e-6)
    assert not sae.threshold.requires_grad  # the optimiser never moves it


def test_batchtopk_keeps_only_positive_values_and_holds_its_threshold_when_none_fire():
    recipe = BatchTopK(n_latents=6, k=3, threshold_lr=0.5, auxk_coef=0.0, normalize=False)
    sae = random_sae(recipe, 4, seed=2)
    with torch.no_grad():
        sae.latent_bias.fill_(-0.6)
        sae.threshold.fill_(0.2)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    pre = pre_activations(sae, x)
    positives = sum(v > 0 for row in pre for v in row)
    assert 0 < positives < 12, "pick another seed: fewer positives than k x tokens"
    out = recipe.loss(sae, x, 1.0)
    assert out.fired_counts.sum().item() == positives
    smallest = min(v for row in pre for v in row if v > 0)
    assert sae.threshold[0].item() == pytest.approx(0.5 * 0.2 + 0.5 * smallest, rel=1e-6)

    with torch.no_grad():
        sae.latent_bias.fill_(-100.0)  # nothing fires: the threshold stays
    recipe.loss(sae, x, 1.0)
    assert sae.threshold[0].item() == pytest.approx(0.5 * 0.2 + 0.5 * smallest, rel=1e-6)

    with torch.no_grad():  # a threshold never set (0) is set by the first batch
        sae.latent_bias.fill_(-0.6)
        sae.threshold.zero_()
    recipe.loss(sae, x, 1.0)
    assert sae.threshold[0].item() == pytest.approx(smallest, rel=1e-6)


def test_batchtopk_gradients_reach_the_kept_latents_only():
    recipe = BatchTopK(n_latents=8, k=2, auxk_coef=0.0, normalize=False)
    sae = random_sae(recipe, 4, seed=4)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    latents = batch_selection(pre_activations(sae, x), 2)
    recipe.loss(sae, x, 1.0).loss.backward()
    _, W_dec, b_pre, _ = weights(sae)
    # d loss / d latent_bias[j] = sum over tokens keeping j of 2 / (N d) * (recons - x) . W_dec[j]
    expected = torch.zeros(8, dtype=torch.float64)
    for row, acts in zip(x.double(), latents, strict=True):
        error = b_pre + sum(a * W_dec[j] for j, a in enumerate(acts) if a) - row
        for j, a in enumerate(acts):
            if a:
                expected[j] += 2 / (6 * 4) * float(error @ W_dec[j])
    assert torch.allclose(sae.latent_bias.grad.double(), expected, atol=1e-6)


def test_batchtopk_saves_a_jumprelu_with_its_shared_threshold_or_a_topk(tmp_path):
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(5))
    recipe = BatchTopK(n_latents=16, k=2, normalize=False)
    sae, scale = recipe.build(8, x, seed=0)
    for _ in range(3):
        recipe.loss(sae, x, scale)
    # the provenance `saelab train` writes (the recipe's k) does not make it a TopK
    written = save_sae(sae, tmp_path / "jump", {"recipe": recipe.name, "k": 2, "normalize": True})
    assert [p.name for p in written] == ["sae.safetensors", "sae.json"]  # OpenAI's has no JumpReLU
    loaded = saelab_format.load(tmp_path / "jump").sae
    assert loaded.jumprelu and loaded.k is None
    assert torch.equal(loaded.threshold, sae.threshold.detach())
    assert loaded.threshold.unique().numel() == 1 and loaded.threshold[0] > 0
    with torch.no_grad():  # inference: relu(pre) where pre > the shared threshold
        pre = (x - loaded.pre_bias) @ loaded.W_enc.T + loaded.latent_bias
        expected = torch.where(pre > loaded.threshold[0], pre, 0.0)
        assert torch.allclose(loaded(x)[1], expected)

    topk = BatchTopK(n_latents=16, k=2, normalize=False, inference="topk")
    sae, _ = topk.build(8, x, seed=0)
    save_sae(sae, tmp_path / "topk", {})
    loaded = saelab_format.load(tmp_path / "topk").sae
    assert not loaded.jumprelu and loaded.k == 2
    assert (tmp_path / "topk" / "sae.pt").is_file() is False  # raw inputs with TopK: not OpenAI's


# -- Matryoshka ------------------------------------------------------------------------------
def test_matryoshka_sums_the_loss_of_each_nested_prefix():
    recipe = Matryoshka(n_latents=8, k=3, group_sizes=[2, 2, 4], auxk_coef=0.0, normalize=False)
    assert recipe.prefixes == [2, 4, 8]
    sae = random_sae(recipe, 4, seed=6)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(6))
    latents = batch_selection(pre_activations(sae, x), 3)
    expected = {}
    for width in (2, 4, 8):
        inner = [[a if j < width else 0.0 for j, a in enumerate(row)] for row in latents]
        expected[width] = mse_of(inner, sae, x)
    assert len(set(expected.values())) == 3

    out = recipe.loss(sae, x, 2.0)

    assert out.loss.item() == pytest.approx(2.0 * sum(expected.values()), rel=1e-5)
    for width in (2, 4, 8):
        assert out.logs[f"mse_prefix_{width}"].item() == pytest.approx(expected[width], rel=1e-5)
    assert out.logs["mse"].item() == pytest.approx(expected[8], rel=1e-5)


def test_matryoshka_default_groups_and_bad_groups():
    assert default_groups(256) == [16, 16, 32, 64, 128]
    assert sum(default_groups(100)) == 100
    with pytest.raises(UserError, match="must be positive and sum to recipe.n_latents=8"):
        Matryoshka(n_latents=8, k=2, group_sizes=[2, 2])


# -- Multi-TopK ------------------------------------------------------------------------------
def test_multi_topk_is_the_top_k_loss_plus_an_eighth_of_the_top_4k_loss():
    recipe = MultiTopK(n_latents=16, k=2, auxk_coef=0.0, normalize=False)
    sae = random_sae(recipe, 6, seed=7)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(7))

    def top(pre, k):
        order = sorted(range(len(pre)), key=lambda j: -pre[j])[:k]
        return [max(v, 0.0) if j in order else 0.0 for j, v in enumerate(pre)]

    pre = pre_activations(sae, x)
    loss_k = mse_of([top(row, 2) for row in pre], sae, x)
    loss_4k = mse_of([top(row, 8) for row in pre], sae, x)
    assert abs(loss_4k - loss_k) > 0.1  # the two terms are told apart

    out = recipe.loss(sae, x, 5.0)

    assert out.loss.item() == pytest.approx(5.0 * (loss_k + loss_4k / 8), rel=1e-5)
    assert out.logs["mse"].item() == pytest.approx(loss_k, rel=1e-5)
    assert out.logs["mse_top8"].item() == pytest.approx(loss_4k, rel=1e-5)
    assert out.fired_counts.sum().item() == sum(v > 0 for row in pre for v in top(row, 2))
    assert sae.k == 2 and not sae.jumprelu  # saved as TopK with k


# -- JumpReLU --------------------------------------------------------------------------------
def rect(u: float) -> float:
    return 1.0 if -0.5 < u < 0.5 else 0.0


def jumprelu_case(bandwidth=0.4, l0_coef=0.1, pre_act_coef=0.0):
    recipe = JumpReLU(
        n_latents=6,
        l0_coef=l0_coef,
        bandwidth=bandwidth,
        init_threshold=0.3,
        pre_act_coef=pre_act_coef,
        dead_tokens=100,
        normalize=False,
    )
    sae = random_sae(recipe, 4, seed=8)
    with torch.no_grad():
        sae.log_threshold.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])))
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(8))
    return recipe, sae, x


def test_jumprelu_forward_and_loss_are_the_definition():
    recipe, sae, x = jumprelu_case()
    theta = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    pre = pre_activations(sae, x)
    latents = [[v if v > theta[j] else 0.0 for j, v in enumerate(row)] for row in pre]
    l0 = sum(sum(a != 0 for a in row) for row in latents) / len(x)
    assert 0 < l0 < 6

    out = recipe.loss(sae, x, 2.5)

    assert out.loss.item() == pytest.approx(2.5 * mse_of(latents, sae, x) + 0.1 * l0, rel=1e-5)
    assert out.logs["l0_loss"].item() == pytest.approx(l0)
    with torch.no_grad():  # the SAE's own (inference) forward is the same JumpReLU
        assert torch.allclose(sae(x)[1].double(), torch.tensor(latents, dtype=torch.float64))


def test_jumprelu_threshold_gradients_are_the_rectangle_pseudo_derivatives():
    """d loss / d log_threshold_j = theta_j * sum over tokens of
         dL/dlatent_ij * -(theta_j / eps) * rect((pre_ij - theta_j) / eps)    (JumpReLU)
       + l0_coef / N *   -(1 / eps)       * rect((pre_ij - theta_j) / eps)    (L0 step)
    and latent_bias gets dL/dlatent_ij where the latent is on (the step passes no gradient)."""
    eps, coef = 0.6, 0.1
    recipe, sae, x = jumprelu_case(bandwidth=eps, l0_coef=coef)
    theta = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    pre = pre_activations(sae, x)
    latents = [[v if v > theta[j] else 0.0 for j, v in enumerate(row)] for row in pre]
    _, W_dec, b_pre, _ = weights(sae)
    N, d = x.shape
    near = sum(rect((v - theta[j]) / eps) for row in pre for j, v in enumerate(row))
    assert near >= 5, "pick another seed: few pre-activations within the bandwidth"
    grad_log = [0.0] * 6
    grad_bias = [0.0] * 6
    for row, acts, pre_row in zip(x.double(), latents, pre, strict=True):
        error = b_pre + sum(a * W_dec[j] for j, a in enumerate(acts) if a) - row
        for j in range(6):
            d_latent = 1.0 * 2 / (N * d) * float(error @ W_dec[j])  # mse_scale 1
            kernel = rect((pre_row[j] - theta[j]) / eps)
            d_theta = d_latent * -(theta[j] / eps) * kernel + coef / N * -(1 / eps) * kernel
            grad_log[j] += theta[j] * d_theta  # d theta / d log theta = theta
            grad_bias[j] += d_latent * (pre_row[j] > theta[j])

    recipe.loss(sae, x, 1.0).loss.backward()

    assert sae.log_threshold.grad.tolist() == pytest.approx(grad_log, rel=1e-4, abs=1e-7)
    assert sae.latent_bias.grad.tolist() == pytest.approx(grad_bias, rel=1e-4, abs=1e-7)


def test_jumprelu_pre_activation_penalty_reaches_dead_latents_only():
    recipe, sae, x = jumprelu_case(pre_act_coef=0.5)
    theta = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    with torch.no_grad():
        sae.stats_last_nonzero.copy_(torch.tensor([0, 500, 0, 0, 500, 0]))
        sae.latent_bias[[1, 4]] = -3.0  # latents 1 and 4 stay off in this batch: still dead
    pre = pre_activations(sae, x)
    expected = sum(max(theta[j] - row[j], 0.0) for row in pre for j in (1, 4)) / len(x)
    out = recipe.loss(sae, x, 1.0)
    assert out.logs["pre_act_loss"].item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    # the penalty pulls dead latents' biases up: d/db_j = -0.5 / N per token below threshold
    assert sae.latent_bias.grad[[1, 4]].tolist() == pytest.approx([-0.5, -0.5], rel=1e-5)


def test_jumprelu_state_holds_the_log_threshold_and_saves_a_plain_jumprelu(tmp_path):
    recipe, sae, x = jumprelu_case()
    state = sae.state_dict()
    assert {"log_threshold", "threshold", "encoder.weight"} <= state.keys()
    fresh = recipe.new_sae(4, seed=99)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.log_threshold, sae.log_threshold)  # exact: no exp/log round trip
    assert isinstance(fresh, LogThresholdAutoencoder)

    save_sae(sae, tmp_path / "jump", {"recipe": "jumprelu"})
    loaded = saelab_format.load(tmp_path / "jump").sae
    assert type(loaded).__name__ == "Autoencoder" and loaded.jumprelu
    assert torch.allclose(loaded.threshold, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    with torch.no_grad():
        assert torch.equal(loaded(x)[1], sae(x)[1])


def test_jumprelu_initial_threshold():
    recipe = JumpReLU(n_latents=8, init_threshold=0.02, normalize=False)
    sae, _ = recipe.build(4, torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), 0)
    assert sae.threshold.detach().tolist() == pytest.approx([0.02] * 8, rel=1e-6)
    assert math.isclose(recipe.l0_coef, 1e-3)


def test_jumprelu_target_l0_loss_is_dictionary_learnings():
    """With target_l0 T the sparsity term is l0_coef * (L0 / T - 1)^2, L0 counted by hand."""
    recipe, sae, x = jumprelu_case()
    recipe.target_l0 = 1.5
    theta = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    pre = pre_activations(sae, x)
    latents = [[v if v > theta[j] else 0.0 for j, v in enumerate(row)] for row in pre]
    l0 = sum(sum(a != 0 for a in row) for row in latents) / len(x)
    assert l0 != 1.5

    out = recipe.loss(sae, x, 2.5)

    expected = 2.5 * mse_of(latents, sae, x) + 0.1 * (l0 / 1.5 - 1) ** 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_jumprelu_target_l0_starts_the_thresholds_at_the_target():
    """Every threshold starts at one value at which the init sample's mean L0 (counted here
    from the built SAE's own pre-activations) is the target, to within one activation."""
    sample = torch.randn(512, 16, generator=torch.Generator().manual_seed(3))
    recipe = JumpReLU(n_latents=64, target_l0=5, normalize=False)
    sae, _ = recipe.build(16, sample, 0)
    theta = sae.threshold.detach()
    assert torch.all(theta == theta[0]) and theta[0] > 0
    with torch.no_grad():
        W_enc, _, b_pre, b_lat = weights(sae)
        pre = (sample.double() - b_pre) @ W_enc.T + b_lat
    on = (pre > float(theta[0])).sum().item()
    assert 5 * 512 - 2 <= on <= 5 * 512  # the cut-off itself is not above the threshold
    assert JumpReLU(n_latents=64).build(16, sample, 0)[0].threshold[0].item() == pytest.approx(0.01)


# -- config checks ---------------------------------------------------------------------------
BAD_RECIPES = [
    ("batchtopk", ["recipe.k=0"], "recipe.k=0 must be an integer from 1"),
    ("batchtopk", ["recipe.threshold_lr=0"], "recipe.threshold_lr=0 must be a number in \\(0"),
    ("batchtopk", ["recipe.inference=relu"], "recipe.inference=relu must be jumprelu or topk"),
    ("matryoshka", ["recipe.group_sizes=[8,8]"], "recipe.group_sizes=\\[8, 8\\] must be"),
    ("matryoshka", ["recipe.group_sizes=[0,256]"], "recipe.group_sizes=\\[0, 256\\] must be"),
    ("multi_topk", ["recipe.multiple=1"], "recipe.multiple=1 must be an integer >= 2"),
    ("multi_topk", ["recipe.k=100"], "recipe.k=100 x recipe.multiple=4 must be at most"),
    ("multi_topk", ["recipe.multiple_coef=-1"], "recipe.multiple_coef=-1 must be a number >= 0"),
    ("jumprelu", ["recipe.l0_coef=-1"], "recipe.l0_coef=-1 must be a number >= 0"),
    ("jumprelu", ["recipe.bandwidth=0"], "recipe.bandwidth=0 must be a positive number"),
    ("jumprelu", ["recipe.init_threshold=0"], "recipe.init_threshold=0 must be a positive"),
    ("jumprelu", ["recipe.pre_act_coef=-1"], "recipe.pre_act_coef=-1 must be a number >= 0"),
    ("jumprelu", ["recipe.target_l0=0"], "recipe.target_l0=0 must be null or a positive number"),
    ("jumprelu", ["recipe.target_l0=300"], "recipe.target_l0=300 must be null or in \\(0, recipe"),
    ("jumprelu", ["recipe.dead_tokens=-1"], "recipe.dead_tokens=-1 must be an integer >= 0"),
]


@pytest.mark.parametrize(("recipe", "overrides", "expected"), BAD_RECIPES)
def test_bad_recipe_values_are_one_clear_line(recipe, overrides, expected):
    cfg = compose("train", [f"recipe={recipe}", "recipe.n_latents=256", *overrides])
    with pytest.raises(UserError) as error:
        check_train(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert __import__("re").search(expected, message), message


@pytest.mark.parametrize("recipe", ["batchtopk", "matryoshka", "multi_topk", "jumprelu"])
def test_default_recipes_pass_the_checks(recipe):
    check_train(compose("train", [f"recipe={recipe}", "recipe.n_latents=256"]))


# -- BatchTopK on two processes --------------------------------------------------------------
def ddp_case():
    """An SAE and a batch of 16 tokens whose first half has larger activations, so a per-rank
    choice (k x 8 on each half) would differ from the batch's."""
    recipe = BatchTopK(n_latents=32, k=4, threshold_lr=0.5, dead_tokens=10**9, normalize=False)
    sae = random_sae(recipe, 8, seed=10)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(10))
    x[:8] *= 3
    return recipe, sae, x


def ddp_step(recipe, sae, x) -> dict[str, torch.Tensor]:
    """One step as `SAETraining` takes it (firing counts reduced over ranks), then gradients
    averaged over ranks as DDP does."""
    from saelab.train.module import SAETraining

    out = recipe.loss(sae, x, 2.0, SAETraining.record_firing)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}
    if torch.distributed.is_initialized():
        for grad in grads.values():
            torch.distributed.all_reduce(grad)
            grad /= torch.distributed.get_world_size()
    return {
        **grads,
        "threshold": sae.threshold.detach().clone(),
        "stats_last_nonzero": sae.stats_last_nonzero.clone(),
        "mse": out.logs["mse"],
    }


def ddp_rank(rank: int, port: int, out_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        recipe, sae, x = ddp_case()
        result = ddp_step(recipe, sae, x[rank * 8 : (rank + 1) * 8])
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_batchtopk_on_two_processes_equals_one(tmp_path):
    """The selection is across the global batch: two gloo ranks with 8 tokens each choose,
    update the threshold and the firing statistics, and (averaged) get the gradients of one
    process on all 16 tokens. AuxK is normalised per rank, as TopK's is (not exercised here:
    no latent is dead)."""
    import socket

    recipe, sae, x = ddp_case()
    latents = batch_selection(pre_activations(sae, x), 4)
    assert sum(a > 0 for row in latents[:8] for a in row) != 4 * 8, "per rank would differ"
    one = ddp_step(recipe, sae, x)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(ddp_rank, args=(port, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    for name in ("W_enc", "W_dec", "pre_bias", "latent_bias"):
        for rank in ranks:
            assert torch.allclose(rank[name], one[name], rtol=1e-5, atol=1e-7), name
    for rank in ranks:
        assert torch.equal(rank["threshold"], one["threshold"])
        assert torch.equal(rank["stats_last_nonzero"], one["stats_last_nonzero"])
    halves = (ranks[0]["mse"] + ranks[1]["mse"]) / 2  # equal halves: the mean of the means
    assert halves.item() == pytest.approx(one["mse"].item(), rel=1e-5)
