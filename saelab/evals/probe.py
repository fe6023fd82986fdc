"""OpenAI's probe loss: how well the single best latent predicts each of many binary token
properties ("Scaling and evaluating sparse autoencoders", Gao et al. 2024, section 4.3).

For each task (`saelab.data.token_tasks`: the token starts a word, is capitalised, is
punctuation, starts with the letter x, ...) and each latent, a 1-D logistic probe
`sigmoid(w * z_i + b)` is fitted on a train split of the evaluated tokens; the latent with
the lowest train loss is the task's probe, and its binary cross-entropy on the held-out split
is the task's loss. `probe/loss` is the mean over tasks (nats; lower is better), and
`probe/baseline_loss` the same with the hook's input channels (the activations the SAE reads)
in place of the latents, the paper's baseline.

Choices where the paper is silent (stated here, so numbers can be compared):
- `z_i` is the latent's post-activation value (after ReLU / TopK / JumpReLU; zero where the
  latent is off), the value the SAE passes to its decoder. The baseline channels are the raw
  activations at the hook (before an SAE's input layer norm).
- The split is by context: every `test_every`-th evaluated context (by its index in the data)
  is held out, the rest train; the latent is chosen on train and scored on the held-out split
  (choosing by held-out loss would overfit the choice to it).
- Classes are balanced (`balanced=true`, the default): positive and negative tokens each
  weigh 1/2 in the loss, in fitting and on the held-out split, so a rare property counts as
  much as a common one and a probe that knows nothing scores log 2 = 0.693. The paper's
  numbers (GPT-2 latents about 0.5, channels about 0.6) fit balanced tasks; its text does
  not say (unconfirmed). `balanced=false` averages over tokens instead, and the know-nothing
  probe then scores the entropy of the task's label.
- The probe's weight has a small ridge (`ridge`, on the feature scaled to unit root mean
  square), so a latent that separates a task perfectly gets a finite weight and a held-out
  loss near 0, not NaN. The bias is unpenalised: a latent that carries no information gets
  the constant probe (`probe/constant_loss`, the mean over tasks of its held-out loss: the
  reference point, log 2 when balanced).
- Tasks with fewer than `min_positives` positive or negative tokens on either split are left
  out (`probe/tasks` counts those kept; the artifact lists all).
- The tokens are the first `max_tokens` evaluated positions (of each rank): the evaluated
  batches, no extra forward. The baseline's probes are fitted once per hook and set of tokens
  and shared by every SAE there (a sweep pays for them once per hook).

Cost: the latents' fits touch only the non-zero latent values (k per token for TopK), the
baseline's every channel of every token: O(tasks x tokens x width) per Newton step.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from saelab.data import token_tasks
from saelab.evals.base import EvalBatch, EvalPlugin, RunContext
from saelab.evals.logistic import Columns, bce_1d, class_weights, fit_1d
from saelab.io import write_json
from saelab.sae.autoencoder import SparseLatents

POSITION_BITS = 20  # a token's key: context index << POSITION_BITS | position
# The channels' probes of recent (tokens, hook) pairs: every SAE at a hook in a sweep shares them.
_BASELINES: OrderedDict[str, dict] = OrderedDict()
BASELINES_KEPT = 16


class ProbeLoss(EvalPlugin):
    """OpenAI's probe loss over token-level tasks, with the hook's channels as the baseline.

    Results: `probe/loss`, `probe/baseline_loss`, `probe/constant_loss`, `probe/tasks`; per
    task (artifact `probe_tasks.json`): the best latent, its train and held-out loss, the best
    channel and its held-out loss, the constant probe's loss and the positives on each
    split."""

    def __init__(
        self,
        tasks: list[str] | None = None,
        max_tokens: int = 8192,
        test_every: int = 4,
        min_positives: int = 10,
        balanced: bool = True,
        ridge: float = 1e-4,
        max_iter: int = 25,
    ) -> None:
        super().__init__()
        self.tasks = token_tasks.check_tasks(None if tasks is None else list(tasks))
        self.max_tokens, self.test_every = int(max_tokens), int(test_every)
        self.min_positives, self.balanced = min_positives, balanced
        self.ridge, self.max_iter = ridge, max_iter
        self.collected = self.contexts_seen = 0

    def setup(self, run: RunContext) -> None:
        self.table = token_tasks.vocab_table(run.model.tokenizer, run.model.vocab_size)
        self.n_latents = run.sae.n_latents
        for name in ("token_key", "token_id", "previous_id", "acts", "entry_key", "entry_col",
                     "entry_value"):  # fmt: skip
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def reset(self) -> None:
        super().reset()
        self.collected = self.contexts_seen = 0

    def update(self, batch: EvalBatch) -> None:
        n_contexts = len(batch.tokens)
        context = batch.context
        if context is None:  # training validation: contexts counted in order
            context = torch.arange(n_contexts) + self.contexts_seen
        self.contexts_seen += n_contexts
        room = self.max_tokens - self.collected
        if room <= 0:
            return
        row, pos = batch.mask.nonzero(as_tuple=True)  # the order of batch.acts' rows
        keep = slice(0, min(room, len(row)))
        row, pos = row[keep], pos[keep]
        device = batch.tokens.device
        key = (context.to(device)[row] << POSITION_BITS) | pos
        previous = torch.where(pos > 0, batch.tokens[row, (pos - 1).clamp_min(0)], -1)
        self.token_key.append(key)
        self.token_id.append(batch.tokens[row, pos])
        self.previous_id.append(previous)
        self.acts.append(batch.acts[keep].float())
        ids, values = _entries(batch.latents, len(row))
        self.entry_key.append(key[ids[0]])
        self.entry_col.append(ids[1])
        self.entry_value.append(values.float())
        self.collected += len(row)

    def compute(self) -> dict[str, float | Tensor]:
        keys = dim_zero_cat(self.token_key)
        order = torch.argsort(keys)
        keys = keys[order]
        token, previous = dim_zero_cat(self.token_id)[order], dim_zero_cat(self.previous_id)[order]
        acts = dim_zero_cat(self.acts)[order]
        held_out = ((keys >> POSITION_BITS) % self.test_every) == 0
        y = token_tasks.labels(self.table.to(keys.device), token, previous, self.tasks)
        rows = torch.searchsorted(keys, dim_zero_cat(self.entry_key))
        cols, values = dim_zero_cat(self.entry_col), dim_zero_cat(self.entry_value)
        n_latents = self.n_latents

        counts = torch.stack([y[:, ~held_out].sum(1), (~y[:, ~held_out]).sum(1),
                              y[:, held_out].sum(1), (~y[:, held_out]).sum(1)])  # fmt: skip
        kept = counts.min(0).values >= self.min_positives
        kept_tasks = [t for t, k in zip(self.tasks, kept.tolist(), strict=True) if k]
        y_kept = y[kept]
        latent = self._best(
            lambda split: _select_rows(rows, cols, values, split, n_latents), held_out, y_kept
        )
        channel = self._baseline(acts, held_out, y_kept)
        constant = self._constant_loss(held_out, y_kept)
        self.kept_tasks, self.counts = kept_tasks, counts[:, kept]
        mean = (lambda v: v.mean().item()) if kept_tasks else (lambda v: math.nan)
        return {
            "probe/loss": mean(latent["test_loss"]),
            "probe/baseline_loss": mean(channel["test_loss"]),
            "probe/constant_loss": mean(constant),
            "probe/tasks": len(kept_tasks),
            "probe/task_best_latent": latent["best"],
            "probe/task_train_loss": latent["train_loss"],
            "probe/task_loss": latent["test_loss"],
            "probe/task_best_channel": channel["best"],
            "probe/task_baseline_loss": channel["test_loss"],
            "probe/task_constant_loss": constant,
        }

    def _best(self, columns, held_out: Tensor, y: Tensor) -> dict:
        """The feature of lowest train loss per task, and its held-out loss."""
        if len(y) == 0:
            empty = torch.zeros(0)
            return {"best": empty.long(), "train_loss": empty, "test_loss": empty}
        train, test = columns(~held_out), columns(held_out)
        fit = fit_1d(train, y[:, ~held_out], self.balanced, self.ridge, self.max_iter)
        best = fit.loss.argmin(1)
        test_loss = bce_1d(test, y[:, held_out], fit, self.balanced)
        pick = best[:, None]
        return {
            "best": best,
            "train_loss": fit.loss.gather(1, pick)[:, 0],
            "test_loss": test_loss.gather(1, pick)[:, 0],
        }

    def _baseline(self, acts: Tensor, held_out: Tensor, y: Tensor) -> dict:
        """The hook channels' probes: the same for every SAE at the hook on the same tokens,
        so fitted once and kept (keyed by a hash of the activations, labels and settings)."""
        digest = hashlib.sha1(repr((self.balanced, self.ridge, self.max_iter)).encode())
        for tensor in (acts, held_out, y):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key not in _BASELINES:
            _BASELINES[key] = self._best(lambda split: Columns.dense(acts[split]), held_out, y)
            while len(_BASELINES) > BASELINES_KEPT:
                _BASELINES.popitem(last=False)
        _BASELINES.move_to_end(key)
        return _BASELINES[key]

    def _constant_loss(self, held_out: Tensor, y: Tensor) -> Tensor:
        """[T] held-out loss of the probe without a feature (the train split's weighted rate)."""
        train, test = y[:, ~held_out].double(), y[:, held_out].double()
        rate = (class_weights(train, self.balanced) * train).sum(1, keepdim=True)
        rate = rate.clamp(1e-6, 1 - 1e-6)
        nll = -(test * rate.log() + (1 - test) * (1 - rate).log())
        return (class_weights(test, self.balanced) * nll).sum(1).float()

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        tasks = []
        for i, name in enumerate(self.kept_tasks):
            tasks.append({
                "task": name,
                "best_latent": int(results["probe/task_best_latent"][i]),
                "train_loss": float(results["probe/task_train_loss"][i]),
                "loss": float(results["probe/task_loss"][i]),
                "best_channel": int(results["probe/task_best_channel"][i]),
                "baseline_loss": float(results["probe/task_baseline_loss"][i]),
                "constant_loss": float(results["probe/task_constant_loss"][i]),
                "positives_train": int(self.counts[0, i]),
                "positives_test": int(self.counts[2, i]),
            })  # fmt: skip
        skipped = [name for name in self.tasks if name not in self.kept_tasks]
        record = {
            "definition": "best 1-D logistic probe on a post-activation latent, chosen by "
            "train loss; held-out binary cross-entropy in nats (saelab.evals.probe)",
            "balanced": self.balanced,
            "loss": results["probe/loss"],
            "baseline_loss": results["probe/baseline_loss"],
            "tasks": tasks,
            "skipped_tasks": skipped,
            "min_positives": self.min_positives,
        }
        return [write_json(out_dir / "probe_tasks.json", record)]


def _entries(latents: SparseLatents | Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """((row, latent) [2, E], values [E]) of the non-zero latents of the first `n_rows` rows."""
    if isinstance(latents, SparseLatents):
        indices, values = latents.indices[:n_rows], latents.values[:n_rows]
        fired = values > 0
        row = torch.arange(n_rows, device=values.device)[:, None].expand_as(indices)
        return torch.stack([row[fired], indices[fired]]), values[fired]
    dense = latents[:n_rows]
    ids = dense.nonzero().T
    return ids, dense[ids[0], ids[1]]


def _select_rows(rows: Tensor, cols: Tensor, values: Tensor, split: Tensor, n: int) -> Columns:
    """The sparse columns of the rows where `split`, renumbered 0 .. split.sum() - 1."""
    new_row = torch.cumsum(split.long(), 0) - 1
    inside = split[rows]
    return Columns.sparse(new_row[rows[inside]], cols[inside], values[inside],
                          int(split.sum()), n)  # fmt: skip
