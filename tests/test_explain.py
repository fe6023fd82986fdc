"""N2G explanations (saelab/export/explain.py) against latents written out in the tests, tries
and predictions worked out by hand (OpenAI's `predict` semantics), and the model's own forwards
against plain Hugging Face hidden states."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saelab.evals.base import RunContext
from saelab.export.explain import (
    ANY,
    LEAF,
    START,
    Contexts,
    Example,
    Explained,
    Explanation,
    ModelLatents,
    Window,
    build,
    padding_token,
    score,
    split_examples,
)
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.models import byte_tokenizer
from saelab.sources.places import Place

A, B, PAD = 1, 2, 99  # token ids of the stand-in latents; PAD is never in their data


def after_a(elsewhere: float):
    """A stand-in latent: 1.0 on B right after A, `elsewhere` on any other B, else 0."""

    def act(tokens: list[int], i: int) -> float:
        if tokens[i] != B:
            return 0.0
        return 1.0 if i > 0 and tokens[i - 1] == A else elsewhere

    return act


def latent_fn(act):
    """The `LatentFn` of a stand-in latent: its value at each sequence's last token."""
    return lambda seqs, latents: [act(seq, len(seq) - 1) for seq in seqs]


def sequences(n: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(0, 8) for _ in range(length)] for _ in range(n)]


def examples_of(act, seqs: list[list[int]], latent: int = 0) -> tuple[list[Example], list]:
    """Top examples (cut after the selected token) where it fires most, then random ones."""
    events = [(act(s, i), s, i) for s in seqs for i in range(len(s)) if act(s, i) > 0]
    events.sort(key=lambda e: -e[0])
    top, rest = events[:10], events[10:]
    picked = top + random.Random(0).sample(rest, min(10, len(rest)))
    return [Example(latent, s[: i + 1], a) for a, s, i in picked], events


@pytest.mark.parametrize("elsewhere", [0.4, 0.5])
def test_n2g_recovers_b_after_a(elsewhere):
    """With B elsewhere below half of 1.0 the two patterns come out and predict the latent
    exactly; at exactly half (the issue's 0.5) OpenAI's `>= 0.5` keeps the suffix "B" alone
    for the top examples, so "B" is the one pattern: still exact on fired / not fired."""
    act = after_a(elsewhere)
    examples, _ = examples_of(act, sequences(40, 12, seed=1))
    (explanation,) = build(latent_fn(act), examples, PAD).values()
    patterns = {(tuple(p["tokens"]), p["start"], p["act"]) for p in explanation.patterns()}
    if elsewhere < 0.5:
        assert patterns == {((A, B), False, 1.0), ((B,), False, elsewhere)}
    else:
        assert patterns == {((B,), False, 0.5)}
    fresh = sequences(30, 16, seed=2)
    for seq in fresh:
        truth = [act(seq, i) for i in range(len(seq))]
        predicted = explanation.predict(seq)
        if elsewhere < 0.5:
            assert predicted == truth
        assert [v > 0 for v in predicted] == [v > 0 for v in truth]
    windows = [Window(s, [act(s, i) for i in range(len(s))]) for s in fresh]
    scores = score(explanation, windows)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0
    if elsewhere < 0.5:
        assert scores["correlation"] == pytest.approx(1.0)


def test_openai_walk_hides_a_longer_pattern_and_the_deepest_walk_does_not():
    act = after_a(0.4)
    examples, _ = examples_of(act, sequences(40, 12, seed=1))
    (explanation,) = build(latent_fn(act), examples, PAD).values()
    assert explanation.predict([5, A, B], deepest=False) == [0.0, 0.0, 0.4]  # "B" ends the walk
    assert explanation.predict([5, A, B]) == [0.0, 0.0, 1.0]


def test_a_latent_firing_on_one_token_is_that_token():
    token = 6
    act = lambda seq, i: 2.5 if seq[i] == token else 0.0  # noqa: E731
    examples, _ = examples_of(act, sequences(30, 10, seed=3))
    (explanation,) = build(latent_fn(act), examples, PAD).values()
    assert explanation.patterns() == [{"tokens": [token], "start": False, "act": 2.5}]
    assert explanation.tokens() == {token}


def test_an_example_needing_a_longer_suffix_than_max_tokens_adds_no_pattern():
    two_after_a = latent_fn(
        lambda seq, i: 1.0 if seq[i] == B and i > 1 and seq[i - 2] == A else 0.0
    )
    examples = [Example(0, [7, A, 3, B], 1.0)]
    assert build(two_after_a, examples, PAD, max_tokens=2)[0].patterns() == []
    (explanation,) = build(two_after_a, examples, PAD, max_tokens=3).values()
    assert explanation.patterns() == [{"tokens": [A, None, B], "start": False, "act": 1.0}]


def trie(*paths) -> Explanation:
    """A trie written out by hand: each path is (keys from the firing token back, act)."""
    e = Explanation()
    for keys, act in paths:
        node = e.trie
        for key in keys:
            node = node.setdefault(key, {})
        node[LEAF] = act
    return e


def test_walk_matches_openai_predict_by_hand():
    a, b, c, e, q, r, x = range(10, 17)
    # OpenAI's "a, anything, c" case (their explanations.py __main__): c <- * <- a, c <- a
    a_any_c = trie(((c, ANY, a), 1.0), ((c, a), 1.0))
    for deepest in (False, True):
        assert a_any_c.predict([a, e, c, a, c], deepest=deepest) == [0, 0, 1.0, 0, 1.0]
        assert a_any_c.predict([a, b, b, c], deepest=deepest) == [0, 0, 0, 0]  # no backtracking
        assert a_any_c.predict([b, c], deepest=deepest) == [0, 0]
    # the exact token before the wildcard, and no backtracking into the wildcard's branch
    exact_first = trie(((x, a, q), 1.0), ((x, ANY, r), 2.0))
    assert exact_first.predict([r, a, x]) == [0, 0, 0]
    assert exact_first.predict([r, b, x]) == [0, 0, 2.0]
    assert exact_first.predict([q, a, x]) == [0, 0, 1.0]
    # the start node: only where the walk reaches the first token of a context's start
    first_position = trie(((ANY, START), 1.0))  # OpenAI's first_position_fn case
    assert first_position.predict([c, b, a]) == [1.0, 0, 0]
    assert first_position.predict([c, b, a], at_start=False) == [0, 0, 0]
    needs_start = trie(((b, a, START), 3.0), ((b,), 0.5))
    assert needs_start.predict([a, b, a, b], deepest=False) == [0, 0.5, 0, 0.5]
    assert needs_start.predict([a, b]) == [0, 3.0]  # deepest: the start pattern


def test_openai_cases_build_the_tries_their_asserts_need():
    """OpenAI's three __main__ cases, run through `build`, give the predictions they assert."""
    a, b, c = 0, 1, 2
    first = latent_fn(lambda seq, i: 1.0 if i == 0 else 0.0)
    built = build(first, [Example(0, [a], 1.0), Example(0, [b], 1.0)], PAD)[0]
    assert built.predict([a, b, c]) == [1.0, 0, 0] and built.predict([c, b, a]) == [1.0, 0, 0]
    only_c = latent_fn(lambda seq, i: 1.0 if seq[i] == c else 0.0)
    built = build(only_c, [Example(0, [a, b, c], 1.0), Example(0, [b, c], 1.0)], PAD)[0]
    assert built.predict([b, c]) == [0, 1.0] and built.predict([c, b, c]) == [1.0, 0, 1.0]
    a_then_c = latent_fn(lambda seq, i: 1.0 if seq[i] == c and a in seq[:i] else 0.0)
    docs = [[a, b, c], [b, a, c], [a, c]]
    built = build(a_then_c, [Example(0, doc, 1.0) for doc in docs], PAD)[0]
    assert built.predict([b, c]) == [0, 0] and built.predict([a, c]) == [0, 1.0]
    assert built.predict([a, 4, c, a, c]) == [0, 0, 1.0, 0, 1.0]
    assert built.predict([a, b, b, c]) == [0, 0, 0, 0]  # OpenAI's noted limitation


def test_patterns_rebuild_the_same_trie():
    rng = np.random.default_rng(0)
    e = Explanation()
    for _ in range(30):
        n = int(rng.integers(1, 5))
        tokens = [None if rng.random() < 0.3 else int(rng.integers(0, 4)) for _ in range(n)]
        e.insert(tokens, bool(rng.random() < 0.3), float(rng.integers(1, 9)))
    again = Explanation.from_patterns(e.patterns())
    assert again.trie == e.trie
    for seq in sequences(20, 8, seed=4):
        assert again.predict(seq) == e.predict(seq)


def test_the_deepest_walk_predicts_at_the_same_tokens_as_openais():
    """Precision, recall and F1 read only predicted > 0, so they do not depend on the walk."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        e = Explanation()
        for _ in range(int(rng.integers(1, 12))):
            n = int(rng.integers(1, 5))
            tokens = [None if rng.random() < 0.3 else int(rng.integers(0, 4)) for _ in range(n)]
            e.insert(tokens, bool(rng.random() < 0.3), float(rng.integers(1, 9)))
        for seq in sequences(10, 8, seed=int(rng.integers(0, 1000))):
            seq = [t % 4 for t in seq]
            shallow = [v > 0 for v in e.predict(seq, deepest=False)]
            assert [v > 0 for v in e.predict(seq)] == shallow


def test_score_by_hand():
    e = trie(((B,), 1.0))
    windows = [Window([B, 3, B], [1.0, 1.0, 0.0]), Window([4, 5], [0.0, 0.0])]
    # predicted [1, 0, 1, 0, 0], actual [1, 1, 0, 0, 0]: one hit of two claims, two firings
    found = score(e, windows)
    assert found["precision"] == 0.5 and found["recall"] == 0.5 and found["f1"] == 0.5
    p, a = np.array([1, 0, 1, 0, 0.0]), np.array([1, 1, 0, 0, 0.0])
    pc, ac = p - p.mean(), a - a.mean()
    assert found["correlation"] == pytest.approx((pc @ ac) / np.sqrt((pc @ pc) * (ac @ ac)))
    assert score(e, [Window([4], [0.0])]) is None  # nothing fired: not scored
    assert score(Explanation(), windows)["precision"] == 0.0
    # firings weighted by activation: B (3.0) predicted, 3 (1.0) not -> recall 3/4, F1 with 1/2
    found = score(e, [Window([B, 3, B], [3.0, 1.0, 0.0])])
    assert found["recall"] == 0.5 and found["recall_weighted"] == 0.75
    assert found["f1_weighted"] == pytest.approx(2 * 0.5 * 0.75 / (0.5 + 0.75))


def test_a_window_is_scored_on_its_own_tokens_read_from_its_context_start():
    e = trie(((B, A), 1.0))  # "A B"
    # tokens [A, B, 5] from the context's start; the window is the last two: B (after A) fires
    found = score(e, [Window([A, B, 5], [1.0, 0.0]), Window([4, 5], [0.0, 0.0])])
    assert found["precision"] == found["recall"] == 1.0
    assert score(e, [Window([B, 5], [1.0, 0.0])])["recall"] == 0.0  # no A before B


BOS = 0


def context_sets(windows: list[tuple[int, int, int, list[int], list[float], float]]):
    """A stand-in for one latent's example `Sets` (export/sets.py): per slot (ctx, pos, key,
    window tokens with -1 outside the context, window acts, act); window 2 left, 1 right."""
    m = len(windows)
    ctx, pos, key, tokens, acts, act = (np.array([w[i] for w in windows])[None] for i in range(6))
    return SimpleNamespace(valid=np.ones((1, m), bool), ctx=ctx, pos=pos, key=key,
                           tokens=tokens, acts=acts, act=act, left=2)  # fmt: skip


def test_examples_and_held_out_windows_read_their_context_from_its_start():
    """Building examples: the context up to the selected token; held-out windows: the context
    from its start to the window's end, scored on the window's tokens after BOS."""
    rows = [[BOS, 5, 6, A, B, 7], [BOS, A, B, 8, 9, B], [BOS, 9, A, B, 8, 5], [BOS, 5, 6, A, B, 7]]
    contexts = Contexts(np.array(rows), first=1)
    top = context_sets([(0, 4, 10, [6, A, B, 7], [0, 0, 2.0, 0], 2.0)])
    reservoir = context_sets([
        (2, 3, 11, [9, A, B, 8], [0, 0, 1.0, 0], 1.0),  # the random example (n_random=1)
        (3, 4, 10, [6, A, B, 7], [0, 0, 2.0, 0], 2.0),  # the top example's window elsewhere: not
        (0, 4, 10, [6, A, B, 7], [0, 0, 2.0, 0], 2.0),  # the top example's own window: not
        (2, 5, 14, [B, 8, 5, -1], [0, 0, 0.3, 0], 0.3),  # a building example's context: not
        (1, 1, 12, [-1, BOS, A, B], [0, 0, 0.5, 1.0], 0.5),  # held out, at the start
        (1, 5, 13, [8, 9, B, -1], [0, 0, 0.7, 0], 0.7),  # held out
    ])  # fmt: skip
    built, held_out = split_examples(0, top, reservoir, 1, contexts)
    assert [(e.tokens, e.act) for e in built] == [([5, 6, A, B], 2.0), ([9, A, B], 1.0)]
    # the window's positions after BOS, and the context's tokens from its start to the window's end
    assert [(w.tokens, w.acts) for w in held_out] == [
        ([A, B], [0.5, 1.0]),
        ([A, B, 8, 9, B], [0.0, 0.0, 0.7]),
    ]


def test_exported_examples_are_predicted_from_their_context_start():
    contexts = np.array([[BOS, A, B, 5, B]])
    explained = Explained({0: trie(((B, A), 1.0))}, {}, PAD, contexts, first=1)
    # a window from position 2: B after A (position 1, outside the window) fires, B after 5 not
    window = {"ctx": 0, "pos": 4, "idx": 2, "tokens": [B, 5, B]}
    assert explained.predict_example(0, window) == [1.0, 0.0, 0.0]
    with_bos = {"ctx": 0, "pos": 2, "idx": 2, "tokens": [BOS, A, B]}
    assert explained.predict_example(0, with_bos) == [0.0, 0.0, 1.0]


def test_padding_token_rule():
    assert padding_token(byte_tokenizer(511), None) == 62  # "_" (" _" is two bytes)
    assert padding_token(byte_tokenizer(511), 7) == 7


def test_model_latents_match_hugging_face_hidden_states(tiny_model):
    """Each sequence's value = the SAE's latent at the last position of BOS + tokens, from
    Hugging Face's own hidden states (one sequence at a time), whatever the batching."""
    layer, bos = 0, 511
    sae = Autoencoder.random(128, 64, k=8, seed=0)
    run = RunContext.of_sae(sae, tiny_model, Place("resid_post_mlp", layer))
    fn = ModelLatents(run, bos, batch_size=3)
    rng = random.Random(0)
    seqs = [[rng.randrange(0, 500) for _ in range(rng.randrange(1, 6))] for _ in range(12)]
    seqs += [seqs[0], seqs[1]]  # repeats run once
    latents = [rng.randrange(0, 128) for _ in seqs]
    got = fn(seqs, latents)
    hf = tiny_model.bridge.original_model
    for seq, latent, value in zip(seqs, latents, got, strict=True):
        with torch.no_grad():
            hidden = hf(torch.tensor([[bos, *seq]]), output_hidden_states=True).hidden_states
            want, _ = sae.encode(hidden[layer + 1][0, -1])
        assert value == pytest.approx(float(want[latent]), abs=1e-5)
    assert fn.n_forwarded == 12
