"""SAEBench's sparse probing: can a few latents tell labelled texts apart?

Per task (`saelab.data.labelled`: the bundled Shakespeare tasks offline, SAEBench's datasets
online) and per class, one-vs-rest: the hook's activations of each text, mean-pooled over its
tokens (BOS, end-of-text and padding masked), encoded by the SAE and mean-pooled the same way
(the latents' post-activation values); the `k` latents whose class means differ most (|mean
over positives - mean over negatives| on the train split) feed a logistic regression
(scikit-learn's default objective, L2 with C = 1, as SAEBench), scored by accuracy on the test
split. Results, averaged over each task's classes, then over tasks:

- `sparse_probing/sae_top_{k}_accuracy` for each k (1, 2, 5 by default);
- `sparse_probing/sae_accuracy`: the probe on every latent;
- `sparse_probing/llm_accuracy`, `sparse_probing/llm_top_{k}_accuracy`: the same on the hook's
  channels (the baseline; the same for every SAE at the hook).

As SAEBench (`evals/sparse_probing/main.py`, `probe_training.py`): each class's negatives are
drawn evenly from the other classes, as many as its positives (seeded with the run's seed),
on both splits, so chance is 0.5; a text is its first `context_length` tokens after BOS. One
difference: SAEBench trains the all-channel and all-latent probes with AdamW and keeps the
epoch of best *test* accuracy; here every probe is the same L2 logistic regression, fitted on
train alone.

Cost and sharing: the task's activations at a hook are captured once (one forward per batch
of texts, stopped after the hooked block) and kept in a `HookCache` keyed by (model, hook,
task, context length), with the baseline's results, so every SAE at that hook in a sweep (and
every validation of a training run) reuses them; the cache holds at most `cache_bytes`,
least recently used out first. Only the SAE's encoding and its probes are per SAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from saelab.data import labelled
from saelab.errors import UserError
from saelab.evals.base import EvalBatch, EvalPlugin, RunContext
from saelab.evals.hook_cache import HookCache
from saelab.evals.logistic import fit_l2
from saelab.io import write_json

DEFAULT_TASKS = ("shakespeare_play", "shakespeare_genre", "shakespeare_speaker")


@dataclass
class TaskActivations:
    """A task's texts at one hook: the activations of every counted token (`acts` [M, d],
    `text` [M] the text each row belongs to) and their per-text means `pooled` [n, d]."""

    acts: Tensor
    text: Tensor
    pooled: Tensor
    labels: list[str]
    test: Tensor  # [n] bool
    baseline: dict[int, dict] = field(default_factory=dict)  # seed -> the channels' results

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.acts, self.text, self.pooled))


# (model, hook, task, context length, sizes) -> the task's activations
_CACHE = HookCache()


class SparseProbing(EvalPlugin):
    """SAEBench's sparse probing on labelled text tasks (see the module docstring)."""

    def __init__(
        self,
        datasets: list[str] | tuple[str, ...] = DEFAULT_TASKS,
        k: list[int] | tuple[int, ...] = (1, 2, 5),
        context_length: int = 64,
        batch_size: int = 32,
        hub_train: int = 2000,
        hub_test: int = 500,
        max_train: int | None = None,
        max_test: int | None = None,
        C: float = 1.0,
        cache_bytes: float = 2e9,
    ) -> None:
        super().__init__()
        self.datasets, self.k = list(datasets), sorted(int(k) for k in k)
        self.context_length, self.batch_size = int(context_length), int(batch_size)
        self.hub_train, self.hub_test = int(hub_train), int(hub_test)
        self.max_train, self.max_test = max_train, max_test
        self.C, self.cache_bytes = C, float(cache_bytes)

    def setup(self, run: RunContext) -> None:
        if self.context_length > run.model.n_ctx:
            raise UserError(
                f"evals.sparse_probing.context_length={self.context_length} exceeds the "
                f"model's context ({run.model.n_ctx} tokens)"
            )
        self.run = run

    def update(self, batch: EvalBatch) -> None:
        """Nothing from the evaluated batches: the tasks are their own texts."""

    def compute(self) -> dict[str, float | Tensor]:
        self.details = {}
        for name in self.datasets:
            task = self.activations(name)
            latents = pool_latents(self.run.sae, task)
            if task.baseline.get(self.run.seed) is None:
                task.baseline[self.run.seed] = self.probes(name, task.pooled, task, "llm")
            self.details[name] = {**task.baseline[self.run.seed],
                                  **self.probes(name, latents, task, "sae")}  # fmt: skip
        keys = [f"{kind}_accuracy" for kind in ("llm", "sae")]
        keys += [f"{kind}_top_{k}_accuracy" for kind in ("llm", "sae") for k in self.k]
        results: dict[str, float | Tensor] = {}
        for key in keys:
            per_task = [_mean(d[key].values()) for d in self.details.values()]
            results[f"sparse_probing/{key}"] = _mean(per_task)
        return results

    def activations(self, name: str) -> TaskActivations:
        """The task's activations at this run's hook: from the cache, or captured now."""
        run = self.run
        key = (run.hook, name, self.context_length, self.hub_train, self.hub_test,
               self.max_train, self.max_test)  # fmt: skip

        def make() -> TaskActivations:
            data = labelled.load(name, self.hub_train, self.hub_test)
            data = data.first(self.max_train, self.max_test)
            return capture(run, data, self.context_length, self.batch_size)

        return _CACHE.get(run.model, key, make, self.cache_bytes)

    def probes(self, name: str, x: Tensor, task: TaskActivations, kind: str) -> dict:
        """Per class accuracies of the probe on all of `x`'s columns and on the top k."""
        out: dict[str, dict[str, float]] = {f"{kind}_accuracy": {}}
        out.update({f"{kind}_top_{k}_accuracy": {} for k in self.k})
        classes = sorted(set(task.labels))
        labels = torch.tensor([classes.index(label) for label in task.labels])
        for c, label in enumerate(classes):
            g = torch.Generator().manual_seed(self.run.seed * 1_000_003 + c)
            train = one_vs_rest(labels, ~task.test, c, g)
            test = one_vs_rest(labels, task.test, c, g)
            x_train, y_train = x[train[0]], train[1]
            x_test, y_test = x[test[0]], test[1]
            out[f"{kind}_accuracy"][label] = accuracy(x_train, y_train, x_test, y_test, self.C)
            for k in self.k:
                top = top_k_mean_difference(x_train, y_train, k)
                acc = accuracy(x_train[:, top], y_train, x_test[:, top], y_test, self.C)
                out[f"{kind}_top_{k}_accuracy"][label] = acc
        return out

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        mine = {k.removeprefix("sparse_probing/"): v for k, v in results.items()
                if k.startswith("sparse_probing/")}  # fmt: skip
        record = {
            "definition": "SAEBench sparse probing: mean-pooled texts, one-vs-rest per class, "
            "top-k latents by |difference of class means| on train, L2 logistic regression "
            "(C=1), test accuracy (saelab.evals.sparse_probing)",
            "results": mine,
            "tasks": self.details,
        }
        return [write_json(out_dir / "sparse_probing.json", record)]


def capture(run: RunContext, data: labelled.LabelledTexts, context_length: int,
            batch_size: int) -> TaskActivations:  # fmt: skip
    """The hook's activations of each text: BOS then its first `context_length - 1` tokens,
    in batches padded to their longest text; rows of BOS, end-of-text and padding dropped."""
    tokenizer = run.model.tokenizer
    special = torch.tensor(sorted({tokenizer.bos_token_id, tokenizer.eos_token_id,
                                   tokenizer.pad_token_id} - {None}))  # fmt: skip
    ids = tokenizer(data.texts, add_special_tokens=False)["input_ids"]
    ids = [[tokenizer.bos_token_id, *t[: context_length - 1]] for t in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding per batch
    acts, text = [], []
    bar = tqdm(total=len(ids), desc=f"sparse probing {data.name} at {run.hook}", unit="text",
               leave=False)  # fmt: skip
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(ids[i]) for i in batch)
        tokens = torch.full((len(batch), width), tokenizer.eos_token_id)
        counted = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, i in enumerate(batch):
            tokens[row, : len(ids[i])] = torch.tensor(ids[i])
            counted[row, : len(ids[i])] = True
        counted &= ~torch.isin(tokens, special)
        hook_acts = run.activations(tokens)
        counted = counted.to(hook_acts.device)
        acts.append(hook_acts[counted].float())
        rows = torch.tensor(batch, device=hook_acts.device)[:, None].expand_as(counted)
        text.append(rows[counted])
        bar.update(len(batch))
    bar.close()
    acts_all, text_all = torch.cat(acts), torch.cat(text)
    pooled = mean_by_text(acts_all, text_all, len(ids))
    test = torch.tensor(data.test)
    return TaskActivations(acts_all, text_all, pooled, list(data.labels), test)


def mean_by_text(values: Tensor, text: Tensor, n: int) -> Tensor:
    """Per text mean [n, d] of rows `values` [M, d] belonging to texts `text` [M]."""
    sums = values.new_zeros(n, values.shape[1]).index_add_(0, text, values)
    counts = torch.bincount(text, minlength=n).clamp_min(1)
    return sums / counts[:, None].to(values.dtype)


@torch.no_grad()
def pool_latents(sae, task: TaskActivations, chunk: int = 1024) -> Tensor:
    """Per text mean [n, n_latents] of the SAE's post-activation latents of its tokens."""
    n = len(task.labels)
    sums = task.acts.new_zeros(n, sae.n_latents)
    for start in range(0, len(task.acts), chunk):
        x, text = task.acts[start : start + chunk], task.text[start : start + chunk]
        if sae.k is not None:
            latents, _ = sae.encode_sparse(x)
            rows = text[:, None].expand_as(latents.indices)
            sums.index_put_((rows, latents.indices), latents.values, accumulate=True)
        else:
            latents, _ = sae.encode(x)
            sums.index_add_(0, text, latents)
    counts = torch.bincount(task.text, minlength=n).clamp_min(1)
    return sums / counts[:, None].to(sums.dtype)


def one_vs_rest(labels: Tensor, split: Tensor, c: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(rows, 0/1 targets) of class `c` against the rest within `split`, SAEBench's way: all of
    the class's rows, and as many negatives, drawn evenly from the other classes (each gives
    ceil(positives / other classes) at random, then that pool is cut at random to size)."""
    positives = torch.nonzero(split & (labels == c))[:, 0]
    others = [k for k in labels.unique().tolist() if k != c]
    each = math.ceil(len(positives) / max(len(others), 1))
    pool = []
    for k in others:
        rows = torch.nonzero(split & (labels == k))[:, 0]
        pool.append(rows[torch.randperm(len(rows), generator=g)[:each]])
    pool = torch.cat(pool)
    negatives = pool[torch.randperm(len(pool), generator=g)[: len(positives)]]
    rows = torch.cat([positives, negatives])
    targets = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])
    return rows, targets


def top_k_mean_difference(x: Tensor, y: Tensor, k: int) -> Tensor:
    """The `k` columns with the largest |mean over positives - mean over negatives|."""
    difference = (x[y > 0].mean(0) - x[y == 0].mean(0)).abs()
    return torch.argsort(difference, descending=True, stable=True)[:k]


def accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, C: float) -> float:
    """Test accuracy of the L2 logistic probe fitted on train (positive where the logit > 0)."""
    w, b = fit_l2(x_train, y_train.to(x_train.device), C=C)
    predicted = (x_test.double() @ w + b) > 0
    return (predicted.float().cpu() == y_test).float().mean().item()


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
