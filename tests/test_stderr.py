"""Standard errors against independent computations: the textbook SE of a mean over contexts,
a brute-force bootstrap over contexts for ratio metrics, and a paired SE done by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saelab.evals import Downstream, Reconstruction
from saelab.evals.base import EvalBatch, RunContext
from saelab.evals.stderr import paired, standard_error
from saelab.sae.autoencoder import Autoencoder
from tests.conftest import fed

D, N_LATENTS, T, VOCAB = 5, 16, 6, 9


def batches(
    n_batches: int, seed: int = 0, noise: float = 0.3, contexts_per_batch: int = 8
) -> list[EvalBatch]:
    """Batches of contexts whose activations and errors vary by context (a shift and a scale
    drawn per context), with their context indices."""
    g = torch.Generator().manual_seed(seed)
    sae = Autoencoder.random(N_LATENTS, D, k=3, seed=seed)
    out = []
    for i in range(n_batches):
        B = contexts_per_batch
        tokens = torch.randint(0, VOCAB, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[:, 0] = False
        shift = torch.randn(B, 1, 1, generator=g).expand(B, T - 1, D)
        scale = torch.rand(B, 1, 1, generator=g).expand(B, T - 1, D) + 0.2
        acts = (torch.randn(B, T - 1, D, generator=g) + 2 * shift).reshape(-1, D) + 1.0
        err = noise * scale.reshape(-1, D) * torch.randn(B * (T - 1), D, generator=g)
        recons = acts + err
        with torch.no_grad():
            latents, _ = sae.encode_sparse(acts)
        # clean logits favour the next token (by a margin that varies by context); the SAE's
        # add noise; the ablated ones are flatter and noisier
        logits = torch.randn(B, T, VOCAB, generator=g)
        margin = 3 * torch.rand(B, 1, generator=g).expand(B, T - 1)
        logits[:, :-1].scatter_add_(-1, tokens[:, 1:, None], margin[..., None])
        spliced = logits + 0.5 * torch.randn(B, T, VOCAB, generator=g)
        ablated = 0.2 * logits + torch.randn(B, T, VOCAB, generator=g)
        log_probs = [lg.log_softmax(-1) for lg in (logits, spliced, ablated)]
        batch = EvalBatch(tokens, mask, acts, recons, latents, *log_probs)
        batch.context = torch.arange(i * B, (i + 1) * B)
        out.append(batch)
    return out


def feed(plugin, data):
    return fed(plugin, data, Autoencoder(N_LATENTS, D, k=3))


def evaluate(plugin, data):
    return feed(plugin, data).compute()


def per_context(data, values_of) -> np.ndarray:
    """[C, T-1] per-token values of each context, computed here from the batches."""
    return np.concatenate([values_of(b).reshape(len(b.tokens), -1) for b in data])


def bootstrap_se(per_context_arrays: list[np.ndarray], statistic, n: int = 4000) -> float:
    """The sd of `statistic` over `n` resamples of whole contexts, with replacement."""
    rng = np.random.default_rng(0)
    C = len(per_context_arrays[0])
    stats = []
    for _ in range(n):
        pick = rng.integers(0, C, C)
        stats.append(statistic(*(a[pick] for a in per_context_arrays)))
    return float(np.std(stats, ddof=1))


def test_se_of_a_mean_is_the_textbook_formula():
    data = batches(6)
    out = evaluate(Reconstruction(), data)

    def nmse(b):
        x, xh = b.acts.double().numpy(), b.recons.double().numpy()
        return ((xh - x) ** 2).sum(1) / (x**2).sum(1)

    means = per_context(data, nmse).mean(1)  # T-1 tokens in every context
    C = len(means)
    expected = np.sqrt(np.sum((means - means.mean()) ** 2) / (C - 1)) / np.sqrt(C)
    estimate = out["reconstruction/nmse"]
    assert float(estimate) == pytest.approx(means.mean(), rel=1e-12)
    assert estimate.se == pytest.approx(expected, rel=1e-9)
    assert torch.equal(estimate.contexts, torch.arange(C))


def test_se_with_unequal_tokens_per_context_weights_contexts_by_tokens():
    """Contexts with more evaluated tokens count more: the ratio estimator's SE, written out."""
    data = batches(4)
    g = torch.Generator().manual_seed(1)
    for b in data:  # drop a random number of positions from each context
        keep = torch.rand(b.mask.shape, generator=g) > 0.4
        keep[:, 1] = True
        rows = keep[:, 1:].reshape(-1)
        b.mask = b.mask & keep
        b.acts, b.recons = b.acts[rows], b.recons[rows]
        lat = b.latents
        b.latents = type(lat)(lat.values[rows], lat.indices[rows], lat.n_latents)
    out = evaluate(Reconstruction(), data)
    sums, counts = [], []
    for b in data:
        cos = F.cosine_similarity(b.recons.double(), b.acts.double(), dim=-1)
        which = b.mask.nonzero()[:, 0]
        sums += [float(cos[which == i].sum()) for i in range(len(b.tokens))]
        counts += [int((which == i).sum()) for i in range(len(b.tokens))]
    y, n = np.array(sums), np.array(counts, dtype=float)
    C, r = len(y), y.sum() / n.sum()
    # Var(r) = sum (y_c - r n_c)^2 / (C (C-1) nbar^2): the ratio estimator (Cochran 6.13)
    expected = np.sqrt(((y - r * n) ** 2).sum() / (C * (C - 1))) / n.mean()
    assert float(out["reconstruction/cosine"]) == pytest.approx(r, rel=1e-12)
    assert out["reconstruction/cosine"].se == pytest.approx(expected, rel=1e-9)


def test_se_of_ratio_metrics_matches_a_bootstrap_over_contexts():
    data = batches(40)  # 320 contexts: the delta method and the bootstrap agree to a few %
    down = evaluate(Downstream(), data)
    rec = evaluate(Reconstruction(), data)

    def ce(which):
        def values(b):
            lp = getattr(b, which)[:, :-1].double()
            return F.cross_entropy(lp.transpose(1, 2), b.tokens[:, 1:], reduction="none")[
                :, 1:
            ].numpy()  # positions 1..T-2 predict: mask excludes position 0

        return values

    clean, sae, ablated = (
        per_context(data, ce(k)) for k in ("log_probs", "spliced_log_probs", "ablated_log_probs")
    )

    def recovered(c, s, a):
        return (a.sum() - s.sum()) / (a.sum() - c.sum())

    assert float(down["downstream/ce_loss_recovered"]) == pytest.approx(
        recovered(clean, sae, ablated), rel=1e-6
    )  # the plugin's cross-entropies are float32
    boot = bootstrap_se([clean, sae, ablated], recovered)
    assert down["downstream/ce_loss_recovered"].se == pytest.approx(boot, rel=0.06)

    x = np.stack([b.acts.double().numpy().reshape(len(b.tokens), T - 1, D) for b in data])
    xh = np.stack([b.recons.double().numpy().reshape(len(b.tokens), T - 1, D) for b in data])
    x, xh = x.reshape(-1, T - 1, D), xh.reshape(-1, T - 1, D)

    def fvu(xs, xhs):  # the mean recomputed in every resample
        flat = xs.reshape(-1, D)
        return ((xhs - xs) ** 2).sum() / ((flat - flat.mean(0)) ** 2).sum()

    boot = bootstrap_se([x, xh], fvu)
    assert rec["reconstruction/fvu"].se == pytest.approx(boot, rel=0.06)
    assert rec["reconstruction/explained_variance"].se == rec["reconstruction/fvu"].se


@pytest.mark.parametrize("offset", [0.0, 20.0])
def test_fvu_and_its_se_are_the_delta_method_written_out(offset):
    """Exact to float tolerance, also where a large common mean (offset 20: |mean|^2 about 90
    times the variance, as in GPT-2's anisotropic residual stream) makes the per-dimension sums
    large: the plugin keeps them per context in float32, and that rounding (2^-24 of each row)
    moves fvu and its SE by about 2^-24 x 2 x 90 / sqrt(320 contexts) = 6e-7 or less."""
    data = batches(40)
    for b in data:
        b.acts, b.recons = b.acts + offset, b.recons + offset
    rec = evaluate(Reconstruction(), data)
    x = np.concatenate([b.acts.double().numpy().reshape(-1, T - 1, D) for b in data])
    xh = np.concatenate([b.recons.double().numpy().reshape(-1, T - 1, D) for b in data])
    # context c's share of the denominator is its squared deviation from the mean of all tokens
    err = ((xh - x) ** 2).sum((1, 2))
    dev = ((x - x.reshape(-1, D).mean(0)) ** 2).sum((1, 2))
    C, ratio = len(err), err.sum() / dev.sum()
    exact = np.sqrt((((err - ratio * dev) / dev.mean()) ** 2).sum() / (C * (C - 1)))
    assert float(rec["reconstruction/fvu"]) == pytest.approx(ratio, rel=1e-6)
    assert rec["reconstruction/fvu"].se == pytest.approx(exact, rel=1e-6)


def test_paired_se_by_hand():
    """Two SAEs on the same contexts: the SE of their difference from per-context differences."""
    data = batches(5, seed=3)
    other = batches(5, seed=3, noise=0.35)  # the same contexts, a slightly worse reconstruction
    a, b = evaluate(Reconstruction(), data), evaluate(Reconstruction(), other)

    def nmse_by_context(bs):
        return np.array(
            [
                float((((xh - x) ** 2).sum(1) / (x**2).sum(1)).mean())
                for batch in bs
                for x, xh in zip(
                    batch.acts.double().reshape(len(batch.tokens), T - 1, D),
                    batch.recons.double().reshape(len(batch.tokens), T - 1, D),
                    strict=True,
                )
            ]
        )

    d = nmse_by_context(data) - nmse_by_context(other)
    C = len(d)
    by_hand = math.sqrt(sum((v - d.mean()) ** 2 for v in d) / (C - 1) / C)
    difference, se = paired(a["reconstruction/nmse"], b["reconstruction/nmse"])
    assert difference == pytest.approx(d.mean(), rel=1e-9)
    assert se == pytest.approx(by_hand, rel=1e-9)
    # pairing removes the contexts' shared variation: far below the unpaired SE
    unpaired = math.hypot(a["reconstruction/nmse"].se, b["reconstruction/nmse"].se)
    assert se < unpaired / 3


def test_states_merged_like_ddp_ranks_give_the_same_standard_errors():
    data = batches(4)
    whole = evaluate(Downstream(), data)
    rank0, rank1 = Downstream(), Downstream()
    feed(rank0, data[1::2])  # the ranks' contexts interleave, as the data loader shards
    feed(rank1, data[::2])
    rank0.merge_state(rank1)
    merged = rank0.compute()
    for key, value in whole.items():
        assert float(merged[key]) == pytest.approx(float(value), rel=1e-12), key
        assert merged[key].se == pytest.approx(value.se, rel=1e-9), key
        assert torch.equal(merged[key].contexts, value.contexts)


def test_standard_error_needs_two_contexts():
    assert math.isnan(standard_error(torch.tensor([0.5])))
    assert standard_error(torch.tensor([1.0, -1.0])) == pytest.approx(1.0)


def test_inside_inference_mode():
    """Lightning's test loop computes under inference mode; autograd must still run."""
    plugin = Reconstruction()
    plugin.setup(RunContext.of_sae(Autoencoder(N_LATENTS, D, k=3)))
    with torch.inference_mode():
        for batch in batches(2):
            plugin.update(batch)
        out = plugin.compute()
    assert out["reconstruction/nmse"].se > 0
