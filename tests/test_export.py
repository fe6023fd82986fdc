"""The export against brute force: statistics, examples, logit effects, neighbours, files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saelab.cli import main
from saelab.evals.base import EvalBatch, RunContext
from saelab.evals.evaluator import encode_decode
from saelab.export import Export, weights
from saelab.export.ablation import ablation_effects
from saelab.export.sets import Sets, round_acts
from saelab.export.settings import hist_edges
from saelab.export.writer import intervals
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.places import Place
from tests.test_cli import FAST

B, T, D, N_LATENTS, VOCAB = 6, 12, 16, 40, 50


def run_plugin(sae: Autoencoder, n_batches: int = 4, vocab: int = VOCAB, **options):
    """The plugin over random batches, and the dense latents [contexts, T, n] it saw."""
    torch.manual_seed(0)
    plugin = Export(window=(3, 2), **options)
    plugin.setup(RunContext.of_sae(sae))
    dense = torch.zeros(n_batches * B, T, N_LATENTS)
    tokens_all = torch.randint(0, vocab, (n_batches * B, T))
    for i in range(n_batches):
        tokens = tokens_all[i * B : (i + 1) * B]
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[:, 0] = False
        x = torch.randn(int(mask.sum()), D) * 2
        latents, recons = encode_decode(sae, x)
        context = torch.arange(i * B, (i + 1) * B)
        batch = EvalBatch(tokens, mask, x, recons, latents, context=context)
        batch.document = context[:, None].expand(B, T) + 1000
        plugin.update(batch)
        where = context[:, None].expand(B, T)[mask], torch.arange(T).expand(B, T)[mask]
        dense[where] = latents_by_hand(sae, x)
    return plugin, dense, tokens_all


def latents_by_hand(sae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """OpenAI's encoder written out: TopK SAEs layer-norm the input, then keep the k largest
    pre-activations over ALL latents (ReLU'd); ReLU SAEs take the raw input."""
    if sae.k is not None:
        centred = x - x.mean(-1, keepdim=True)
        x = centred / ((centred.pow(2).sum(-1, keepdim=True) / (x.shape[-1] - 1)).sqrt() + 1e-5)
    pre = (x - sae.pre_bias) @ sae.W_enc.T + sae.latent_bias
    if sae.k is None:
        return pre.clamp(min=0)
    top = pre.topk(sae.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp(min=0))


@pytest.fixture(params=[4, None], ids=["topk", "relu"])
def sae(request) -> Autoencoder:
    sae = Autoencoder.random(N_LATENTS, D, k=request.param, seed=1)
    with torch.no_grad():
        sae.latent_bias.fill_(-0.5 if request.param is None else 0.0)
    return sae.requires_grad_(False)


def test_statistics_match_brute_force(sae):
    plugin, dense, _ = run_plugin(sae)
    results = plugin.compute()
    acts = dense[:, 1:].reshape(-1, N_LATENTS).double()  # evaluated positions only
    fired = acts > 0
    n_fired = fired.sum(0)
    assert int(plugin.n) == len(acts)
    assert torch.equal(results["export/n_fired"], n_fired)
    if sae.k is not None:  # TopK over all latents: k fire at every position, not k per group
        assert bool((fired.sum(1) == sae.k).all())
        assert int(results["export/n_fired"].sum()) == sae.k * len(acts)
    torch.testing.assert_close(results["export/density"], n_fired.double() / len(acts))
    live = n_fired > 0
    assert live.sum() > N_LATENTS // 2
    m = [(acts**p).sum(0)[live] / n_fired[live] for p in (1, 2, 3, 4)]
    torch.testing.assert_close(results["export/mean_act"][live], m[0])
    torch.testing.assert_close(results["export/mean_act_squared"][live], m[1])
    torch.testing.assert_close(results["export/skew"][live], m[2] / m[1] ** 1.5)
    torch.testing.assert_close(results["export/kurtosis"][live], m[3] / m[1] ** 2)
    edges = hist_edges().numpy()
    for j in range(N_LATENTS):
        positive = acts[:, j][acts[:, j] > 0].numpy().clip(edges[0], edges[-1] * 0.999)
        expected, _ = np.histogram(positive, bins=edges)
        np.testing.assert_array_equal(plugin.hist[j].numpy(), expected)


def window_text(tokens: torch.Tensor, ctx: int, pos: int, left: int, right: int) -> tuple:
    """The tokens from `left` before `pos` to `right` after it, None outside the context."""
    return tuple(
        int(tokens[ctx, q]) if 0 <= q < T else None for q in range(pos - left, pos + right + 1)
    )


def brute_top(dense, tokens, j: int, m: int, dedup: int | None) -> list[float]:
    """The `m` largest activations of latent j over all evaluated positions; with `dedup`,
    only the largest of each distinct window text (`dedup` tokens left, 2 right)."""
    best: dict = {}
    for ctx in range(len(dense)):
        for pos in range(1, T):
            act = float(dense[ctx, pos, j])
            if act > 0:
                text = (ctx, pos) if dedup is None else window_text(tokens, ctx, pos, dedup, 2)
                best[text] = max(best.get(text, 0.0), act)
    return sorted(best.values(), reverse=True)[:m]


def test_top_examples_are_the_top_with_their_windows(sae):
    plugin, dense, tokens = run_plugin(sae, n_top=5)
    top = plugin.top
    for j in range(N_LATENTS):
        expected = torch.tensor(brute_top(dense, tokens, j, 5, dedup=3))
        kept = top.score[j] > -torch.inf
        torch.testing.assert_close(top.act[j][kept], expected)
        for s in kept.nonzero().flatten().tolist():
            ctx, pos = int(top.ctx[j, s]), int(top.pos[j, s])
            assert float(dense[ctx, pos, j]) == pytest.approx(float(top.act[j, s]), rel=1e-5)
            assert int(top.doc[j, s]) == ctx + 1000
            lo, hi = max(pos - 3, 0), min(pos + 2, T - 1)
            window = top.tokens[j, s]
            inside = window >= 0
            assert torch.equal(window[inside].long(), tokens[ctx, lo : hi + 1])
            torch.testing.assert_close(
                top.acts[j, s][inside].float(),
                dense[ctx, lo : hi + 1, j].half().float(),
                rtol=1e-3,  # float16: a value on a rounding edge may round either way
                atol=0,
            )


@pytest.mark.parametrize("dedup", [1, None])
def test_top_examples_are_the_top_distinct_windows(sae, dedup):
    """Few token ids: many windows repeat, so the distinct top differs from the plain top."""
    plugin, dense, tokens = run_plugin(sae, vocab=2, n_top=5, dedup=dedup)
    top, differs = plugin.top, 0
    for j in range(N_LATENTS):
        expected = brute_top(dense, tokens, j, 5, dedup)
        kept = (top.score[j] > -torch.inf).nonzero().flatten().tolist()
        torch.testing.assert_close(top.act[j][kept], torch.tensor(expected))
        texts = {window_text(tokens, int(top.ctx[j, s]), int(top.pos[j, s]), 1, 2) for s in kept}
        assert dedup is None or len(texts) == len(kept)
        differs += expected != brute_top(dense, tokens, j, 5, None)
    assert (differs > 0) == (dedup is not None)


def test_sampled_examples_skip_repeated_windows(sae):
    plugin, _, tokens = run_plugin(sae, vocab=2, n_intervals=3, per_interval=4, dedup=1)
    sets, repeats = Sets(plugin.reservoir, left=3), 0
    for j in range(N_LATENTS):
        for examples in [b["examples"] for b in intervals(sets, j, 3, 4)]:
            texts = [window_text(tokens, e["ctx"], e["pos"], 1, 2) for e in examples]
            assert len(set(texts)) == len(texts)
        kept = np.flatnonzero(sets.valid[j])
        texts = [window_text(tokens, sets.ctx[j, s], sets.pos[j, s], 1, 2) for s in kept]
        repeats += len(texts) - len(set(texts))
    assert repeats > 0  # the reservoir itself keeps duplicates: it is a uniform sample


def test_reservoir_is_a_sample_of_positive_events_and_intervals_hold_their_examples(sae):
    plugin, dense, _ = run_plugin(sae, n_intervals=3, per_interval=2, n_random=4)
    reservoir = plugin.reservoir
    sets = Sets(reservoir, left=3)
    for j in range(N_LATENTS):
        n_fired = int((dense[:, 1:, j] > 0).sum())
        kept = (reservoir.score[j] > -torch.inf).nonzero().flatten().tolist()
        assert len(kept) == min(6, n_fired)
        events = {(int(reservoir.ctx[j, s]), int(reservoir.pos[j, s])) for s in kept}
        assert len(events) == len(kept)  # without replacement
        for s in kept:
            at = dense[int(reservoir.ctx[j, s]), int(reservoir.pos[j, s]), j]
            assert float(at) == pytest.approx(float(reservoir.act[j, s]), rel=1e-5)
        bins = intervals(sets, j, 3, 2)
        assert sum(len(b["examples"]) for b in bins) == len(kept)
        for b, following in zip(bins, [*bins[1:], None], strict=True):
            assert all(b["lo"] * 0.999 <= e["act"] <= b["hi"] * 1.001 for e in b["examples"])
            assert following is None or b["hi"] <= following["lo"]


def test_logit_effects_and_neighbours_match_direct_computation(tiny_model):
    d_mlp = tiny_model.width(Place("mlp_post_act", 0).hook)
    for location, width in (("resid_post_mlp", 64), ("mlp_post_act", d_mlp)):
        W_dec = torch.randn(30, width)
        run = RunContext.of_sae(Autoencoder(30, width), tiny_model, Place(location, 1))
        top_ids, top_values, bottom_ids, bottom_values = weights.logit_effects(run, W_dec, 5)
        bridge = tiny_model.bridge
        direction = W_dec @ bridge.blocks[1].mlp.W_out if location == "mlp_post_act" else W_dec
        logits = (direction * bridge.ln_final.w) @ bridge.W_U
        expected = logits.sort(dim=1, descending=True)
        torch.testing.assert_close(top_values, expected.values[:, :5])
        torch.testing.assert_close(bottom_values, expected.values[:, -5:].flip(1))
        assert torch.equal(logits.gather(1, top_ids), top_values)
        assert torch.equal(logits.gather(1, bottom_ids), bottom_values)
    W_dec = torch.randn(50, 8)
    ids, cosines = weights.neighbours(W_dec, 3)
    for i in range(50):
        sims = [
            (float(torch.cosine_similarity(W_dec[i], W_dec[j], dim=0)), j)
            for j in range(50)
            if j != i
        ]
        best = sorted(sims, reverse=True)[:3]
        np.testing.assert_allclose(cosines[i].numpy(), [s for s, _ in best], rtol=1e-5)
        assert ids[i].tolist() == [j for _, j in best]


def test_cli_export_and_interrupted_export(tmp_path: Path, monkeypatch):
    out = tmp_path / "export"
    main(["export", "experiment=tiny", "data.n_tokens=4096", "export.format=openai",
          f"hydra.run.dir={out}"])  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    n = manifest["n_latents"]
    assert manifest["schema"] == "saelab-export/1" and manifest["data"]["n_tokens"] == 4032
    assert len(list((out / "latents").glob("*.json.gz"))) == n
    summary = json.loads((out / "latents.json").read_text())
    assert len(summary["density"]) == n
    live = next(i for i, d in enumerate(summary["density"]) if d > 0)
    record = json.loads(gzip.decompress((out / "latents" / f"{live}.json.gz").read_bytes()))
    assert record["top"][0]["act"] == pytest.approx(summary["max_act"][live], rel=1e-3)
    example = record["top"][0]
    assert example["tokens"][example["idx"]] == summary["top_token"][live]
    assert record["intervals"]["kind"] == "quantile"
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab["bytes"]) == len(vocab["strings"])
    search = json.loads((out / "search.json").read_text())
    hits = search[str(summary["top_token"][live])]
    assert [hit[1] for hit in hits] == sorted((hit[1] for hit in hits), reverse=True)
    assert live in [hit[0] for hit in hits] or len(hits) == 50

    feature = json.loads((out / "openai" / f"{live}.json").read_text())
    assert set(feature) == {
        "density", "mean_act", "mean_act_squared", "skew", "kurtosis", "hist", "top", "random",
    }  # fmt: skip
    assert all(isinstance(feature[k], float) for k in ("density", "mean_act", "mean_act_squared"))
    assert all(k.isdigit() and isinstance(v, int) for k, v in feature["hist"].items())
    sequence = feature["top"][0]
    assert set(sequence) == {"density", "doc_id", "idx", "acts", "act", "tokens", "token_ints"}
    assert all(isinstance(t, str) for t in sequence["tokens"])
    assert all(isinstance(t, int) for t in sequence["token_ints"])
    assert len(sequence["acts"]) == len(sequence["tokens"]) == len(sequence["token_ints"])
    assert sequence["acts"][sequence["idx"]] == pytest.approx(sequence["act"], rel=1e-3)

    # an export that fails part-way (here: writing the search index) leaves no manifest
    import saelab.export.writer as writer

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "search_index", broken)
    with pytest.raises(SystemExit, match="1"):
        main(["export", "experiment=tiny", "data.n_tokens=4096", f"hydra.run.dir={out}"])
    assert not (out / "manifest.json").exists()


def test_eval_with_export_writes_both(tmp_path: Path):
    out = tmp_path / "eval"
    main(["eval", "experiment=tiny", "data.n_tokens=4096", "logger=none", "export=true",
          "evals=[reconstruction,density]", f"hydra.run.dir={out}"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert "reconstruction/explained_variance" in metrics
    assert manifest["data"]["n_tokens"] == 4032
    density = np.load(out / "latent_density.npy")
    summary = json.loads((out / "export" / "latents.json").read_text())
    np.testing.assert_allclose(summary["density"], density)


@pytest.mark.parametrize("location", ["resid_post_mlp", "mlp_post_act"])
def test_ablation_effects_match_a_hooked_forward(tiny_model, location):
    """Against the whole model run with a hook that removes the latent's share by hand."""
    layer, T_ctx = 0, 16  # block 1's attention carries the change to later positions
    place = Place(location, layer)
    hook = place.hook
    sae = Autoencoder.random(32, tiny_model.width(hook), k=4, seed=2).requires_grad_(False)
    generator = torch.Generator().manual_seed(3)
    contexts = torch.randint(0, tiny_model.vocab_size, (5, T_ctx), generator=generator)
    examples = {
        "latent": torch.tensor([3, 3, 17, 30, 0, 9]),
        "ctx": torch.tensor([4, 0, 0, 2, 1, 4]),
        "pos": torch.tensor([5, 15, 1, 9, 2, 13]),
        "act": torch.tensor([2.0, 0.5, 3.0, 1.25, 4.0, 0.75]),
    }
    offsets = torch.arange(-3, 4)
    data = SimpleNamespace(tokens=contexts, batch_size=4)
    run = RunContext.of_sae(sae, tiny_model, place, data)
    loss_diff, kl = ablation_effects(run, examples, offsets)
    bridge = tiny_model.bridge
    for e in range(6):
        latent, ctx, pos, act = (int(examples[k][e]) if k != "act" else float(examples[k][e])
                                 for k in ("latent", "ctx", "pos", "act"))  # fmt: skip
        tokens = contexts[ctx][None]

        def remove(value: torch.Tensor, hook, pos=pos, latent=latent, act=act) -> torch.Tensor:
            x = value[0, pos].double()
            centred = x - x.sum() / len(x)
            std = (centred.pow(2).sum() / (len(x) - 1)).sqrt()
            value = value.clone()
            value[0, pos] -= (act * sae.W_dec[latent].double() * std).to(value.dtype)
            return value

        with torch.no_grad():
            clean = bridge.run_with_hooks(tokens, fwd_hooks=[])[0].double().log_softmax(-1)
            ablated = bridge.run_with_hooks(tokens, fwd_hooks=[(hook, remove)])[0]
        ablated = ablated.double().log_softmax(-1)
        for w, q in enumerate((pos + offsets).tolist()):
            if not 1 <= q < T_ctx:
                expected_loss = expected_kl = 0.0
            else:
                target = int(tokens[0, q])
                expected_loss = float(clean[q - 1, target] - ablated[q - 1, target])
                expected_kl = float((clean[q - 1].exp() * (clean[q - 1] - ablated[q - 1])).sum())
            assert float(loss_diff[e, w]) == pytest.approx(expected_loss, abs=1e-4)
            assert float(kl[e, w]) == pytest.approx(expected_kl, abs=1e-4)
    following = examples["pos"] + 1 < T_ctx
    assert bool((kl[following, 4] > 1e-6).all())  # it changes the prediction of the next token


def test_cli_export_with_ablation(tmp_path: Path, topk_checkpoint: Path):
    out = tmp_path / "export"
    main(["export", "model=random_gpt2", *FAST, "layer=1", "location=resid_post_mlp", "sae=file",
          f"sae.path={topk_checkpoint}", "export.ablation=true", "export.n_top=3",
          "export.format=openai", f"hydra.run.dir={out}"])  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["ablation"] is True
    summary = json.loads((out / "latents.json").read_text())
    live = [i for i, d in enumerate(summary["density"]) if d > 0]
    assert live
    for i in live[:20]:
        record = json.loads(gzip.decompress((out / "latents" / f"{i}.json.gz").read_bytes()))
        for example in record["top"]:
            n, idx = len(example["tokens"]), example["idx"]
            assert len(example["loss_diff"]) == len(example["kl"]) == n
            assert example["kl"][: idx + 1] == [0.0] * (idx + 1)  # before the removal
            assert all(kl >= -1e-4 for kl in example["kl"])
        assert all("kl" not in e for e in record["random"])
        sequence = json.loads((out / "openai" / f"{i}.json").read_text())["top"][0]
        assert sequence["ablate_loss_diff"] == [*record["top"][0]["loss_diff"][1:], 0.0]


def test_rounded_activations_keep_four_significant_digits():
    values = np.random.default_rng(0).lognormal(0, 3, size=(5, 7)).astype(np.float16)
    values[1, 2] = 0
    rounded = round_acts(values, chunk=4)  # chunks that cut across rows
    expected = [[float(f"{float(v):.4g}") for v in row] for row in values]
    assert rounded.tolist() == expected


def test_reservoir_keys_depend_on_the_event_alone_and_are_uniform():
    from saelab.export.examples import uniform_keys

    ids = [torch.randint(0, 1000, (50_000,), generator=torch.Generator().manual_seed(i))
           for i in range(3)]  # fmt: skip
    ctx, pos, latent = ids
    keys = uniform_keys(7, ctx, pos, latent)
    assert torch.equal(keys[:10], uniform_keys(7, ctx[:10], pos[:10], latent[:10]))
    assert not torch.equal(keys, uniform_keys(8, ctx, pos, latent))
    assert keys.min() >= 0 and keys.max() < 1
    counts = torch.histc(keys.float(), bins=10, min=0, max=1)  # 5000 expected per bin
    assert ((counts - 5000).abs() < 300).all(), counts  # > 4 standard deviations
