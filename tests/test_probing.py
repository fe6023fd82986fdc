"""The probing plugins against independent computations: the logistic fits against L-BFGS on
the objective written out here, `probe` on constructed latents whose answer is known, and
`sparse_probing`'s selection and accuracy by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from saelab.data import token_tasks
from saelab.evals.base import EvalBatch, RunContext
from saelab.evals.logistic import Columns, bce_1d, fit_1d
from saelab.evals.probe import ProbeLoss
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.models import byte_tokenizer


def reference_1d(z: torch.Tensor, y: torch.Tensor, a: torch.Tensor, ridge: float):
    """(w, b, loss): sum_n a_n BCE(w z_n + b, y_n) + ridge/2 w^2 minimised by L-BFGS, float64."""
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective():
        logits = params[0] * z + params[1]
        return (a * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()

    def closure():
        optimizer.zero_grad()
        loss = objective() + ridge / 2 * params[0] ** 2
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return params[0].item(), params[1].item(), objective().item()


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_fit_1d_matches_lbfgs_on_the_written_out_objective(balanced, layout):
    g = torch.Generator().manual_seed(0)
    n, n_features, n_tasks = 600, 12, 3
    x = torch.randn(n, n_features, generator=g) * torch.rand(n_features, generator=g) * 3
    x[x < 0.3] = 0  # sparse: most values exactly zero, as latents are
    logits = 2 * x[:, :n_tasks].T - 1.5
    y = (torch.rand(n_tasks, n, generator=g) < torch.sigmoid(logits)).float()
    y[2] = (x[:, 5] > 0).float()  # a task that feature 5 separates perfectly
    if layout == "dense":
        columns = Columns.dense(x)
    else:
        rows, cols = x.nonzero(as_tuple=True)
        columns = Columns.sparse(rows, cols, x[rows, cols], n, n_features)
    fit = fit_1d(columns, y, balanced=balanced, ridge=1e-3, max_iter=100, tol=1e-7,
                 dtype=torch.float64)  # fmt: skip
    for t in range(n_tasks):
        yt = y[t].double()
        if balanced:
            a = torch.where(yt > 0, 0.5 / yt.sum(), 0.5 / (n - yt.sum()))
        else:
            a = torch.full_like(yt, 1 / n)
        for f in range(n_features):
            rms = x[:, f].double().pow(2).mean().sqrt()
            w, b, loss = reference_1d(x[:, f].double() / rms, yt, a, ridge=1e-3)
            assert fit.w[t, f].item() == pytest.approx(w, abs=1e-4), (t, f)
            assert fit.b[t, f].item() == pytest.approx(b, abs=1e-4), (t, f)
            assert fit.loss[t, f].item() == pytest.approx(loss, abs=1e-6), (t, f)
    assert fit.loss[2].argmin().item() == 5
    held_out = bce_1d(columns, y, fit, balanced=balanced)  # the same rows: the fitted loss
    torch.testing.assert_close(held_out, fit.loss)


# -- probe --------------------------------------------------------------------------------
VOCAB = 512
TOKENIZER = byte_tokenizer(VOCAB - 1)


def encode(text: str) -> torch.Tensor:
    """Token ids of `text` (one per byte: the byte-level tokenizer has no merges)."""
    return torch.tensor(TOKENIZER(text, add_special_tokens=False)["input_ids"])


def probe_run(n_latents: int) -> RunContext:
    """A run whose model is only what `probe` reads of it: the byte-level tokenizer."""
    model = SimpleNamespace(tokenizer=TOKENIZER, vocab_size=VOCAB)
    return RunContext.of_sae(Autoencoder.random(n_latents, 8), model=model)


def text_batch(seed: int, n_contexts: int = 16, n_ctx: int = 64):
    """Token contexts of random letters, digits, spaces, punctuation and newlines (bytes)."""
    g = torch.Generator().manual_seed(seed)
    alphabet = encode("abcdefgABCDEFG0123 ,.\n")
    return alphabet[torch.randint(len(alphabet), (n_contexts, n_ctx), generator=g)]


def run_probe(plugin: ProbeLoss, latents_of, n_latents: int, seeds=range(4)) -> dict:
    """`plugin` over batches of `text_batch`, latents [N, n_latents] = latents_of(tokens)."""
    plugin.setup(probe_run(n_latents))
    for i, seed in enumerate(seeds):
        tokens = text_batch(seed)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        flat = tokens[mask]
        latents = latents_of(flat)
        acts = torch.randn(len(flat), 8, generator=torch.Generator().manual_seed(seed))
        context = torch.arange(len(tokens)) + i * len(tokens)
        plugin.update(EvalBatch(tokens, mask, acts, acts, latents, context=context))
    return plugin.compute()


def capitalised(tokens: torch.Tensor) -> torch.Tensor:
    return torch.tensor([TOKENIZER.decode([t]).isupper() for t in tokens.tolist()])


def test_probe_finds_the_latent_that_equals_the_label():
    def latents_of(tokens):
        g = torch.Generator().manual_seed(len(tokens))
        latents = torch.rand(len(tokens), 6, generator=g) * (torch.rand(len(tokens), 6) < 0.3)
        latents[:, 4] = capitalised(tokens).float() * 2.5
        return latents

    results = run_probe(ProbeLoss(tasks=["capitalised", "digit"]), latents_of, 6)
    assert results["probe/tasks"] == 2
    assert results["probe/task_best_latent"][0].item() == 4
    assert results["probe/task_loss"][0].item() < 0.02
    assert results["probe/constant_loss"] == pytest.approx(math.log(2))


@pytest.mark.parametrize("balanced", [False, True])
def test_probe_on_a_constant_latent_scores_the_labels_entropy(balanced):
    plugin = ProbeLoss(tasks=["capitalised"], balanced=balanced, test_every=4)
    results = run_probe(plugin, lambda tokens: torch.ones(len(tokens), 3), 3)
    # by hand: the train split's rate p, the held-out labels' cross-entropy under it
    labels = []
    for i, seed in enumerate(range(4)):
        tokens = text_batch(seed)[:, 1:]
        for c in range(len(tokens)):
            held_out = (i * len(tokens) + c) % 4 == 0
            labels += [(held_out, v) for v in capitalised(tokens[c]).tolist()]
    train = torch.tensor([v for h, v in labels if not h], dtype=torch.float64)
    test = torch.tensor([v for h, v in labels if h], dtype=torch.float64)
    if balanced:
        expected = math.log(2)
    else:
        p, q = train.mean().item(), test.mean().item()
        expected = -(q * math.log(p) + (1 - q) * math.log(1 - p))
    assert results["probe/loss"] == pytest.approx(expected, abs=1e-4)
    assert results["probe/constant_loss"] == pytest.approx(expected, abs=1e-6)


def test_token_task_labels_by_hand():
    table = token_tasks.vocab_table(TOKENIZER, VOCAB)
    tokens = encode("Hi, 9x\nAb")
    previous = torch.cat([torch.tensor([-1]), tokens[:-1]])
    tasks = ("starts_word", "capitalised", "punctuation", "digit", "newline",
             "follows_newline", "first_letter_a", "first_letter_h")  # fmt: skip
    got = token_tasks.labels(table, tokens, previous, tasks)
    #            H  i  ,  ' ' 9  x  \n A  b
    expected = [[0, 0, 0, 0, 0, 0, 0, 1, 0],  # starts_word: a letter after whitespace
                [1, 0, 0, 0, 0, 0, 0, 1, 0],  # capitalised
                [0, 0, 1, 0, 0, 0, 0, 0, 0],  # punctuation
                [0, 0, 0, 0, 1, 0, 0, 0, 0],  # digit
                [0, 0, 0, 0, 0, 0, 1, 0, 0],  # newline
                [0, 0, 0, 0, 0, 0, 0, 1, 0],  # follows_newline
                [0, 0, 0, 0, 0, 0, 0, 1, 0],  # first_letter_a
                [1, 0, 0, 0, 0, 0, 0, 0, 0]]  # first_letter_h  # fmt: skip
    assert got.int().tolist() == expected
