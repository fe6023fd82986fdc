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
    fit = fit_1d(columns, y, balanced=balanced, ridge=1e-3, max_iter=100, tol=1e-12,
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


def test_fit_l2_is_at_the_minimum_of_scikit_learns_objective():
    """The gradient of sum BCE + |w|^2 / (2C), by autograd on the objective written out here,
    vanishes at the fit (the objective is strictly convex in w and b: that is the optimum)."""
    from saelab.evals.logistic import fit_l2

    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 6, generator=g) * torch.tensor([0.1, 1, 3, 1, 1, 10])
    y = (torch.rand(80, generator=g) < torch.sigmoid(x[:, 1] - x[:, 2])).float()
    for C in (0.1, 1.0):
        w, b = fit_l2(x, y, C=C)
        params = torch.cat([w, b[None]]).requires_grad_(True)
        logits = x.double() @ params[:-1] + params[-1]
        loss = F.binary_cross_entropy_with_logits(logits, y.double(), reduction="sum")
        (loss + params[:-1].pow(2).sum() / (2 * C)).backward()
        assert params.grad.abs().max() < 1e-5


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


# -- sparse_probing -------------------------------------------------------------------------
def test_top_k_by_mean_difference_by_hand():
    from saelab.evals.sparse_probing import top_k_mean_difference

    x = torch.tensor([[1.0, 0.0, 3.0, 2.0], [2.0, 0.0, 3.2, 2.0], [1.0, 2.0, 3.0, 0.0],
                      [0.0, 2.0, 3.0, 1.0]])  # fmt: skip
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # |mean(pos) - mean(neg)| = |1.5 - 0.5|, |0 - 2|, |3.1 - 3|, |2 - 0.5| = 1, 2, 0.1, 1.5
    assert top_k_mean_difference(x, y, 1).tolist() == [1]
    assert top_k_mean_difference(x, y, 3).tolist() == [1, 3, 0]


def test_sparse_probing_accuracy_by_hand():
    """Class A against B and C on features where the answer is known: the top latent is
    feature 0 (A's indicator on train; mean difference 1, the others 0.25 at most); on test, 3
    of A's 4 texts and 1 of the 4 others have it, so the probe is right on 3 + 3 of 8."""
    from saelab.evals.sparse_probing import SparseProbing, TaskActivations

    labels = ["A"] * 4 + ["B"] * 4 + ["C"] * 4 + ["A"] * 4 + ["B"] * 2 + ["C"] * 2
    test = torch.tensor([False] * 12 + [True] * 8)
    x = torch.zeros(len(labels), 3)
    x[:4, 0] = 1  # train: A has feature 0, B and C do not
    x[[12, 13, 14, 16], 0] = 1  # test: 3 of A's 4, and the first B
    x[[0, 4, 8, 12, 16, 18], 1] = 0.5  # as often in every class: no difference on train
    x[[1, 5], 2] = 1.0  # one A and one B on train: a difference of 0.25 at most
    task = TaskActivations(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long),
                           x, labels, test)  # fmt: skip
    plugin = SparseProbing(datasets=[], k=[1])
    plugin.setup(RunContext.of_sae(Autoencoder.random(3, 3), model=SimpleNamespace(n_ctx=64)))
    out = plugin.probes("hand", x, task, "sae")
    assert out["sae_top_1_accuracy"]["A"] == pytest.approx(6 / 8)


def test_task_activations_mask_special_tokens_and_padding(tiny_model):
    """Each text's rows equal its own forward without padding, BOS excluded; the pooled
    value is their mean."""
    from saelab.data.labelled import LabelledTexts
    from saelab.evals.sparse_probing import capture
    from saelab.sources.places import Place

    run = RunContext.of_sae(Autoencoder.random(32, 64), tiny_model, Place("resid_post_mlp", 1))
    data = LabelledTexts("t", ["ab", "hello there", "x"], ["p", "q", "p"], [False, True, False])
    task = capture(run, data, context_length=8, batch_size=2)
    tokenizer = tiny_model.tokenizer
    for i, text in enumerate(data.texts):
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        alone = run.activations(torch.tensor([ids[:8]]))[0, 1:]
        torch.testing.assert_close(task.acts[task.text == i], alone)
        torch.testing.assert_close(task.pooled[i], alone.mean(0))
    assert task.test.tolist() == [False, True, False]


@pytest.mark.parametrize("k", [None, 4])
def test_pooled_latents_are_each_texts_mean_of_its_tokens_latents(k):
    from saelab.evals.sparse_probing import TaskActivations, pool_latents

    g = torch.Generator().manual_seed(0)
    sae = Autoencoder.random(16, 8, k=k)
    acts, text = torch.randn(10, 8, generator=g), torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 2, 2])
    task = TaskActivations(acts, text, torch.zeros(3, 8), ["a", "b", "a"], torch.zeros(3) > 0)
    pooled = pool_latents(sae, task, chunk=3)
    for i in range(3):
        rows = [sae.encode(acts[j : j + 1])[0][0] for j in range(10) if text[j] == i]
        torch.testing.assert_close(pooled[i], sum(rows) / len(rows))


# -- SAEBench's hub datasets, from a local fake of the hub ------------------------------------
def fake_hub(monkeypatch, splits: dict) -> list[dict]:
    """`datasets.load_dataset` streaming local rows: `splits[(config, split)]`."""
    import datasets

    calls: list[dict] = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append({"path": path, "name": name, "split": split, **kwargs})
        rows = splits[name, split]
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        return datasets.Dataset.from_dict(columns).to_iterable_dataset(num_shards=2)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def texts_of(data, held_out: bool, label: str | None = None) -> list[str]:
    rows = zip(data.texts, data.labels, data.test, strict=True)
    return [t for t, c, test in rows if test == held_out and label in (None, c)]


def test_ag_news_reads_each_chosen_class_from_train_and_test(monkeypatch):
    from saelab.data import labelled

    def rows(split, n):
        return [{"text": f"{split} {i} class {i % 5}", "label": i % 5} for i in range(n)]

    calls = fake_hub(monkeypatch, {(None, "train"): rows("train", 60),
                                   (None, "test"): rows("test", 40)})  # fmt: skip
    data = labelled.load("fancyzhx/ag_news", n_train=6, n_test=3)
    assert data.classes == ["0", "1", "2", "3"]  # SAEBench's chosen classes: not class 4
    for c in data.classes:
        assert texts_of(data, False, c) == [f"train {i} class {c}" for i in range(int(c), 30, 5)]
        assert texts_of(data, True, c) == [f"test {i} class {c}" for i in range(int(c), 15, 5)]
    assert {call["path"] for call in calls} == {"fancyzhx/ag_news"}
    assert all(call["streaming"] for call in calls)


def test_bias_in_bios_is_balanced_by_gender(monkeypatch):
    from saelab.data import labelled

    rows = [{"hard_text": f"bio {i}", "profession": [0, 1, 2, 6, 9][i % 5],
             "gender": int(i % 7 == 0)} for i in range(2000)]  # fmt: skip
    fake_hub(monkeypatch, {(None, "train"): rows, (None, "test"): rows})
    data = labelled.load("LabHC/bias_in_bios_class_set1", n_train=10, n_test=4)
    by_text = {row["hard_text"]: row for row in rows}
    for c in data.classes:
        genders = [by_text[t]["gender"] for t in texts_of(data, False, c)]
        assert sorted(genders) == [0] * 5 + [1] * 5


def test_a_stream_too_short_says_which_classes_ran_out(monkeypatch):
    from saelab.data import labelled
    from saelab.errors import UserError

    rows = [{"text": "t", "label": i % 4} for i in range(12)]
    fake_hub(monkeypatch, {(None, "train"): rows, (None, "test"): rows})
    with pytest.raises(UserError, match="ran out with too few texts per class"):
        labelled.load("fancyzhx/ag_news", n_train=5, n_test=1)


def test_hub_task_offline_is_one_clear_line(monkeypatch):
    import datasets

    from saelab.data import labelled
    from saelab.errors import UserError

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(UserError) as info:
        labelled.load("fancyzhx/ag_news")
    message = str(info.value)
    assert "offline? use the bundled tasks" in message and "\n" not in message
    with pytest.raises(UserError, match="unknown labelled task 'nope'"):
        labelled.load("nope")


def test_bundled_tasks_are_split_by_passage():
    from saelab.data import labelled

    for name in labelled.BUNDLED:
        data = labelled.load(name)
        assert len(data.classes) >= 4
        train, held_out = set(texts_of(data, False)), set(texts_of(data, True))
        assert train and held_out and not train & held_out


# -- in a sweep -----------------------------------------------------------------------------
def test_sweep_with_both_plugins_captures_each_hooks_task_texts_once(tmp_path, monkeypatch):
    """The tiny zoo (6 SAEs at 5 hooks; two at resid_post_mlp 2) in one sweep: every SAE gets
    the probing results, and the task texts go through the model once per hook."""
    import json
    from collections import Counter

    from saelab.cli import main
    from saelab.evals import sparse_probing

    sparse_probing._CACHE.clear()
    forwards: Counter = Counter()
    original = RunContext.activations

    def counted(self, tokens):
        forwards[self.hook] += 1
        return original(self, tokens)

    monkeypatch.setattr(RunContext, "activations", counted)
    root = tmp_path / "sweep"
    main(["sweep", "experiment=tiny_all", "logger=none", "data.n_tokens=4096",
          "evals=[reconstruction,density,probe,sparse_probing]",
          "evals.sparse_probing.datasets=[shakespeare_speaker]",
          "evals.sparse_probing.max_train=8", "evals.sparse_probing.max_test=4",
          "evals.sparse_probing.batch_size=32", "evals.probe.max_tokens=2048",
          "evals.probe.tasks=[capitalised,newline,punctuation]",
          f"hydra.run.dir={root}"])  # fmt: skip
    rows = json.loads((root / "sweep.json").read_text())
    assert len(rows) == 6
    for row in rows:
        assert 0 < row["probe/loss"] < 1 and row["probe/tasks"] == 3
        assert 0 <= row["sparse_probing/sae_top_1_accuracy"] <= 1
        assert (root / row["run"] / "probe_tasks.json").is_file()
        assert (root / row["run"] / "sparse_probing.json").is_file()
    # 4 classes x 12 texts = 48 texts: two batches of 32, once at each of the 5 hooks
    assert len(forwards) == 5 and set(forwards.values()) == {2}


def test_trained_sae_beats_a_random_one_on_probe_loss():
    """A real signal: on the tiny model, the bundled layer-2 TopK SAE's latents probe the token
    tasks better than those of a random SAE of its shape (one pass for both)."""
    import lightning as L

    from saelab.data.tokens import Bundled, TokenDataModule
    from saelab.evals.evaluator import Evaluation, probe
    from saelab.formats.base import Checkpoint
    from saelab.sae.checkpoints import Bundled as BundledSAEs
    from saelab.sources.models import bundled
    from saelab.sources.places import Place

    model, place = bundled("tiny"), Place("resid_post_mlp", 2)
    data = TokenDataModule(Bundled("val"), n_tokens=4096, batch_size=32)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    trained = BundledSAEs(model="tiny", family="topk").load(place)
    shape = (trained.sae.n_latents, trained.sae.n_inputs)
    random = Checkpoint(Autoencoder.random(*shape, k=trained.sae.k), None, "memory")
    probes = [probe(RunContext(model, place, checkpoint, data), {"probe": ProbeLoss()})
              for checkpoint in (trained, random)]  # fmt: skip
    evaluation = Evaluation(model, probes)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)  # fmt: skip
    trainer.test(evaluation, datamodule=data, verbose=False)
    ours, theirs = (results["probe/loss"] for results in evaluation.results)
    assert ours < theirs - 0.01 < 0.693


def test_hook_cache_keeps_entries_per_model_and_evicts_the_least_recently_used():
    from saelab.evals.hook_cache import HookCache

    class Model:  # weakly referenced, as a ModelSource
        pass

    class Entry:
        def __init__(self, nbytes: int) -> None:
            self.nbytes = nbytes

    cache, made = HookCache(), []

    def make(nbytes: int):
        return lambda: made.append(nbytes) or Entry(nbytes)

    a, b = Model(), Model()
    first = cache.get(a, "hook", make(4), max_bytes=10)
    assert cache.get(a, "hook", make(4), max_bytes=10) is first and made == [4]
    assert cache.get(b, "hook", make(4), max_bytes=10) is not first  # another model: a miss
    cache.get(a, "hook", make(4), max_bytes=10)  # a's entry is now the most recent
    cache.get(a, "other", make(4), max_bytes=10)  # 12 bytes > 10: b's entry (oldest) goes
    assert made == [4, 4, 4]
    cache.get(a, "hook", make(4), max_bytes=10)
    assert made == [4, 4, 4]
    cache.get(b, "hook", make(4), max_bytes=10)
    assert made == [4, 4, 4, 4]
