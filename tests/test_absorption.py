"""`absorption` against hand computations: a constructed SAE whose "starts with s" latent is
silent on one word and weak on another while token-specific latents carry the letter; the
first-letter prompts token by token; the probe training against torch's own loss and Adam;
the small batched fits at scikit-learn's optimum; and a run through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from saelab.data import first_letter
from saelab.data.first_letter import LETTERS, FirstLetterTask
from saelab.evals.absorption import Absorption, HookTask, f1_score, score
from saelab.evals.logistic import Rows, fit_l2_batched, train_probes
from saelab.sae.autoencoder import Autoencoder

S, T = LETTERS.index("s"), LETTERS.index("t")


def constructed_case():
    """Words starting with s and t; activations in 4 dimensions (e0: "starts with s", e1:
    "starts with t", e2: "short"-ness, e3: "shy"-ness). Train: 20 s-words (2 e0), 20 t-words
    (2 e1). Test: 5 s-words, "short" (e0 + e2), "shy" (e0 + e3), 5 t-words.

    SAE (ReLU, no input normalisation, unit decoder rows):
      latent 0 "s":     encoder e0 - 2 e2 - 0.75 e3, bias -0.1, decoder e0
      latent 1 "t":     encoder e1, bias -0.1, decoder e1
      latent 2 "short": encoder e2, decoder 0.6 e0 + 0.8 e2 (cosine 0.6 with the s probe)
      latent 3 "shy":   encoder e3, decoder 0.5 e0 + sqrt(0.75) e3 (cosine 0.5)
    The ground-truth probes are e0 (s) and e1 (t), bias -0.5."""
    e = torch.eye(4)
    words = [f" s{i}" for i in range(20)] + [f" t{i}" for i in range(20)]
    acts = [2 * e[0]] * 20 + [2 * e[1]] * 20
    words += [f" s{i}" for i in range(20, 25)] + [" short", " shy"]
    words += [f" t{i}" for i in range(20, 25)]
    acts += [2 * e[0]] * 5 + [e[0] + e[2], e[0] + e[3]] + [2 * e[1]] * 5
    acts = torch.stack(acts)
    letter = torch.tensor([LETTERS.index(w.strip()[0]) for w in words])
    task = FirstLetterTask(torch.arange(len(words)), letter, words, 40,
                           torch.zeros(len(words), 1, dtype=torch.long),
                           torch.zeros(len(words), dtype=torch.long))  # fmt: skip
    probe_w = torch.zeros(26, 4)
    probe_w[S], probe_w[T] = e[0], e[1]
    probe_b = torch.full((26,), -0.5)
    probe_f1 = torch.zeros(26, dtype=torch.float64)
    probe_f1[S] = probe_f1[T] = 1.0
    shared = HookTask(task, acts, probe_w, probe_b, acts @ probe_w.T + probe_b, probe_f1)

    sae = Autoencoder(4, 4)
    with torch.no_grad():
        sae.W_enc.copy_(torch.stack([e[0] - 2 * e[2] - 0.75 * e[3], e[1], e[2], e[3]]))
        sae.latent_bias.copy_(torch.tensor([-0.1, -0.1, 0.0, 0.0]))
        sae.W_dec.copy_(torch.stack([e[0], e[1], 0.6 * e[0] + 0.8 * e[2],
                                     0.5 * e[0] + math.sqrt(0.75) * e[3]]))  # fmt: skip
    return sae, shared


def test_absorption_of_a_constructed_sae_by_hand():
    """By hand, for letter s (7 detected test words: 5 s-words, "short", "shy"):
    - an s-word: a = x . e0 = 2, main (latent 0) projects m = 1.9, no absorbing latent: 0;
    - "short": a = 1, latent 0 silent (pre 1 - 2 - 0.1 < 0): m = 0; latent 2 fires 1 and
      projects A = 0.6 (cosine 0.6 >= 0.1, A / a >= 0.4): fraction 1; full absorption (main
      silent, top projecting latent 2 with cosine 0.6 >= 0.025 and 0.6 >= 0.4 a);
    - "shy": a = 1, latent 0 fires 1 - 0.75 - 0.1 = 0.15: m = 0.15; latent 3 projects
      A = 0.5: min(A, a - m) = 0.5, fraction 0.5 / (0.5 + 0.15) = 10/13; not full (main fired).
    Letter s: (1 + 10/13) / 7, full rate 1/7; letter t: 0 and 0. Main latents by k-sparse
    probing: [0] for s, [1] for t (latents 2 and 3 never fire on a train word)."""
    sae, shared = constructed_case()
    plugin = Absorption(max_k=2, epochs=50, min_letters=2)
    details = score(sae, shared, plugin)
    assert details["main"][S] == [0] and details["main"][T] == [1]
    assert details["n_detected"][S] == 7 and details["n_detected"][T] == 5
    fraction_s = (1 + 10 / 13) / 7
    assert details["absorption_fraction"][S].item() == pytest.approx(fraction_s, abs=1e-6)
    assert details["full_absorption_rate"][S].item() == pytest.approx(1 / 7)
    assert details["absorption_fraction"][T].item() == 0
    assert details["counted"].nonzero()[:, 0].tolist() == [S, T]
    absorbed = {w["word"]: w for w in details["absorbed"][S]}
    assert set(absorbed) == {" short", " shy"}
    assert absorbed[" short"]["full"] and absorbed[" short"]["top_absorbing_latent"] == 2
    assert not absorbed[" shy"]["full"] and absorbed[" shy"]["top_absorbing_latent"] == 3

    plugin.shared = lambda: shared  # the whole plugin on the constructed hook task
    plugin.run = type("Run", (), {"sae": sae, "seed": 0})()
    results = plugin.compute()
    assert results["absorption/mean_absorption_fraction"] == pytest.approx(fraction_s / 2)
    assert results["absorption/mean_full_absorption"] == pytest.approx(1 / 14)
    assert results["absorption/n_letters"] == 2
    assert results["absorption/mean_num_split_features"] == 1
    plugin.reset()
    plugin.min_letters = 3  # fewer letters than SAEBench asks for: no score
    assert math.isnan(plugin.compute()["absorption/mean_absorption_fraction"])


def test_an_input_normalising_sae_scores_the_same_at_any_input_scale():
    """A latent's projection is its decoded contribution: an SAE that layer-norms its input
    scales its reconstruction back by the input's std, so scaling every activation by 10
    (latents unchanged, every projection x10) leaves the fractions as they were. (SAEBench's
    `value * cosine` would not scale, and "short" would stop counting as absorbed.)"""
    sae, shared = constructed_case()
    acts = torch.cat([shared.acts, -shared.acts.sum(1, keepdim=True)], 1)  # rows of mean 0
    normalising = Autoencoder(4, 5, normalize=True)
    with torch.no_grad():
        normalising.W_enc.copy_(F.pad(sae.W_enc, (0, 1)))
        normalising.latent_bias.copy_(sae.latent_bias)
        normalising.W_dec.copy_(F.pad(sae.W_dec, (0, 1)))
    probe_w = F.pad(shared.probe_w, (0, 1))
    plugin = Absorption(max_k=2, min_letters=2)
    fractions = []
    for scale in (1.0, 10.0):
        x = acts * scale
        hook = HookTask(shared.task, x, probe_w, shared.probe_b, x @ probe_w.T + shared.probe_b,
                        shared.probe_f1)  # fmt: skip
        details = score(normalising, hook, plugin)
        fractions.append(details["absorption_fraction"])
        short = [w for w in details["absorbed"][S] if w["word"] == " short"]
        assert short and short[0]["fraction"] == 1 and short[0]["full"]
    torch.testing.assert_close(fractions[0], fractions[1], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def shakespeare():
    """The bundled tiny model (its BPE tokenizer has word tokens)."""
    from saelab.sources.models import bundled

    return bundled("tiny")


def test_first_letter_prompts_token_by_token(shakespeare):
    tokenizer = shakespeare.tokenizer
    task = first_letter.build(tokenizer, shakespeare.vocab_size, icl_examples=3, max_words=60,
                              seed=1)  # fmt: skip
    _, texts = first_letter.alpha_tokens(tokenizer, shakespeare.vocab_size)
    assert len(task) == 60 and task.n_train == 48
    assert set(task.words) <= set(texts)
    for row in (0, 47, 48, 59):
        prompt = task.prompts[row]
        assert int(prompt[0]) == tokenizer.bos_token_id
        assert int(prompt[task.position[row]]) == int(task.token[row])
        text = tokenizer.decode(prompt[1 : task.position[row] + 1])
        lines = text.split("\n")
        assert lines[0] == "" and lines[-1] == task.words[row]
        split = task.words[:48] if row < 48 else task.words[48:]
        for line in lines[1:-1]:
            word, answer = line.split(" has the first letter: ")
            assert word in split and word != task.words[row]
            assert answer == word.strip()[0].upper()
        assert len(lines) == 5
    assert [LETTERS[i] for i in task.letter[:5]] == [w.strip()[0].lower() for w in task.words[:5]]
    # at most: BOS, newline, 3 x (word, " has the first letter:" (5 tokens), the longest
    # answer (2 tokens: some letters' " X" is two), newline), then the word
    assert first_letter.prompt_length(tokenizer, icl_examples=3) == 2 + 3 * 9 + 1
    assert int(task.position.max()) + 1 <= 30


def test_prompts_beyond_the_models_context_are_a_one_line_error_at_setup(shakespeare):
    from saelab.errors import UserError
    from saelab.evals.base import RunContext
    from saelab.sources.places import Place

    run = RunContext.of_sae(
        Autoencoder.random(64, 256, k=4), shakespeare, Place("resid_post_mlp", 1)
    )
    with pytest.raises(
        UserError, match=r"prompts of up to 183 tokens exceed the model's context \(128\)"
    ):
        Absorption(icl_examples=20).setup(run)  # 2 + 20 x 9 + 1 tokens up to the word
    with pytest.raises(UserError, match="needs one '{word}'"):
        Absorption(template="has the first letter:").setup(run)
    Absorption().setup(run)  # 10 examples: 93 tokens fit


def test_alpha_tokens_are_letters_after_one_optional_space(shakespeare):
    tokenizer = shakespeare.tokenizer
    ids, texts = first_letter.alpha_tokens(tokenizer, shakespeare.vocab_size)
    assert len(ids) > 1000
    for i, text in zip(ids, texts, strict=True):
        body = text[1:] if text.startswith(" ") else text
        assert body and body.isascii() and body.isalpha()
        assert tokenizer.decode([i]) == text
    others = set(range(shakespeare.vocab_size)) - set(ids)
    for i in others:
        text = tokenizer.decode([i])
        assert (
            not text.removeprefix(" ").isascii()
            or not text.removeprefix(" ").isalpha()
            or i in tokenizer.all_special_ids
        )


def test_train_probes_is_saebenchs_training_written_with_torch():
    """SAEBench's `train_multi_probe` written out with torch's BCEWithLogitsLoss(pos_weight),
    the L1 term and torch's Adam + ExponentialLR (one batch per epoch, so the shuffle does not
    matter), from zero, in float64: the same weights from dense rows and from sparse `Rows`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64).clamp_min(0)
    y = F.one_hot(torch.randint(3, (50,), generator=g), 3).double()
    w = torch.zeros(3, 6, requires_grad=True, dtype=torch.float64)
    b = torch.zeros(3, requires_grad=True, dtype=torch.float64)
    optimizer = torch.optim.Adam([w, b], lr=0.01, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, (1e-5 / 0.01) ** (1 / 20))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(50 - y.sum(0)) / y.sum(0))
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(x @ w.T + b, y) + 0.01 * w.abs().sum(1).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    for features in (x, Rows.from_entries(*x.nonzero(as_tuple=True), x[x > 0], 50, 6)):
        w_ours, b_ours = train_probes(features, y, epochs=20, batch_size=64, lr=0.01,
                                      weight_decay=1e-4, l1=0.01)  # fmt: skip
        torch.testing.assert_close(w_ours, w.detach(), atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(b_ours, b.detach(), atol=1e-9, rtol=1e-7)


def test_fit_l2_batched_is_at_the_minimum_of_scikit_learns_balanced_objective():
    """The gradient of sum s_n BCE + |w|^2 / (2C) (balanced weights s, as scikit-learn's
    class_weight="balanced"), by autograd on the objective written out here, vanishes."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 90, 3, generator=g) * torch.tensor([0.5, 2, 5])
    y = (torch.rand(4, 90, generator=g) < torch.sigmoid(x[..., 0] - x[..., 1])).double()
    y[3] = (x[3, :, 2] > 0).double()  # separable: the L2 term keeps it finite
    positives = y.sum(1, keepdim=True)
    s = torch.where(y > 0, 90 / (2 * positives), 90 / (2 * (90 - positives)))
    w, b = fit_l2_batched(x, y, s, C=1.0)
    params = torch.cat([w, b[:, None]], 1).requires_grad_(True)
    z = torch.einsum("bnd,bd->bn", x.double(), params[:, :-1]) + params[:, -1:]
    loss = (s * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
    (loss + params[:, :-1].pow(2).sum() / 2).backward()
    assert params.grad.abs().max() < 1e-6


def test_rows_select_and_dense_columns_by_hand():
    x = torch.tensor([[0.0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 0], [0, 4, 5, 0]])
    rows = Rows.from_entries(*x.nonzero(as_tuple=True), x[x != 0], 4, 4)
    which, cols, values = rows.select(torch.tensor([3, 0]))
    assert which.tolist() == [0, 0, 1, 1]
    assert cols.tolist() == [1, 2, 1, 3] and values.tolist() == [4, 5, 1, 2]
    torch.testing.assert_close(rows.dense_columns(torch.tensor([[3, 1], [1, 0]])),
                               x[:, [[3, 1], [1, 0]]])  # fmt: skip
    assert rows.slice(1, 3).dense_columns(torch.arange(4)).tolist() == x[1:3].tolist()


def test_f1_by_hand():
    predicted = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    actual = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]]).bool()
    assert f1_score(predicted, actual).tolist() == [0.5, 0.0]  # 2 tp / (2 tp + fp + fn)


def test_absorption_through_the_cli_on_the_tiny_model(tmp_path):
    """The plugin in `saelab eval` on the tiny model: its keys in metrics.json and its
    artifact. (The tiny model spells poorly: no letter's probe reaches SAEBench's F1 bar,
    so the bar is lowered here to exercise the whole path.)"""
    from saelab.cli import main

    out = tmp_path / "run"
    main(["eval", "experiment=tiny", "logger=none", "data.n_tokens=2048", "evals=[absorption]",
          "evals.absorption.max_words=300", "evals.absorption.icl_examples=4",
          "evals.absorption.epochs=10", "evals.absorption.min_probe_f1=0",
          "evals.absorption.min_letters=1", f"hydra.run.dir={out}"])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    n = metrics["absorption/n_letters"]
    assert 1 <= n <= 26
    assert 0 <= metrics["absorption/mean_absorption_fraction"] <= 1
    assert 0 <= metrics["absorption/mean_full_absorption"] <= 1
    artifact = json.loads((out / "absorption.json").read_text())
    assert len(artifact["letters"]) == 26
    assert sum(letter["counted"] for letter in artifact["letters"]) == n


def test_the_saes_at_a_hook_share_the_prompts_forwards(shakespeare, monkeypatch):
    """Two SAEs at one hook: the prompts go through the model once (100 words in batches of
    32: 4 forwards), the second SAE reuses them and the ground-truth probes."""
    from saelab.evals import absorption
    from saelab.evals.base import RunContext
    from saelab.sources.places import Place

    absorption._CACHE.clear()
    forwards = []
    original = RunContext.activations
    monkeypatch.setattr(
        RunContext, "activations", lambda self, tokens: forwards.append(1) or original(self, tokens)
    )
    place = Place("resid_post_mlp", 1)
    results = []
    for seed in (0, 1):
        sae = Autoencoder.random(64, 256, k=4, seed=seed)
        plugin = Absorption(max_words=100, icl_examples=2, batch_size=32, epochs=2, max_k=3,
                            min_probe_f1=0, min_letters=1)  # fmt: skip
        plugin.setup(RunContext.of_sae(sae, shakespeare, place))
        with torch.inference_mode():
            results.append(plugin.compute())
        assert len(forwards) == 4
    assert all(0 <= r["absorption/mean_absorption_fraction"] <= 1 for r in results)
