"""The plugin interface: the run a plugin evaluates, what it sees of each batch, and what it
returns.

A plugin is a torchmetrics `Metric`: `setup(run)` gets the run (model, place, checkpoint,
data), it keeps its running sums in states registered with `add_state(...,
dist_reduce_fx="sum")`, so `compute()` is correct across DDP ranks, and `compute()` returns
a dict of results keyed `"<plugin>/<metric>"`. Scalars go to metrics.json and the loggers;
tensors (per-latent arrays) go to `save_artifacts`. A metric that is a function of sums over
contexts keeps them per context (`add_context_sums`, `add_to_contexts`; gathered across
ranks) and computes itself with `context_estimates`: its value then carries a standard
error and per-context influences (`saelab.evals.stderr`). A plugin that needs more than the
evaluated batches (its own pass over the data, e.g. probing) draws it through
`run.activations`, the model's own capture path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from saelab.data.tokens import TokenDataModule
from saelab.evals.stderr import Estimate, estimates
from saelab.formats.base import Checkpoint
from saelab.sae.autoencoder import Autoencoder, SparseLatents
from saelab.sources.models import ModelSource
from saelab.sources.places import Place

# What a plugin may ask the evaluation loop for, beyond activations and SAE outputs: the
# model's next-token log-probabilities, clean, with the SAE spliced in, and zero-ablated.
LOG_PROBS, SPLICED_LOG_PROBS, ABLATED_LOG_PROBS = (
    "log_probs",
    "spliced_log_probs",
    "ablated_log_probs",
)


@dataclass
class RunContext:
    """The run a plugin evaluates: the model, where the SAE reads, the checkpoint (the SAE and
    its provenance), the data (its tokens, `data.tokens`, once prepared) and the run's seed.
    `model`, `place` and `data` are None only for a plugin exercised on an SAE alone."""

    model: ModelSource | None
    place: Place | None
    checkpoint: Checkpoint
    data: TokenDataModule | None = None
    seed: int = 0

    @classmethod
    def of_sae(cls, sae: Autoencoder, model: ModelSource | None = None, place: Place | None = None,
               data: TokenDataModule | None = None, seed: int = 0) -> RunContext:  # fmt: skip
        """A run of an SAE held in memory (training, tests): no file behind it."""
        return cls(model, place, Checkpoint(sae, None, "memory"), data, seed)

    @property
    def sae(self) -> Autoencoder:
        return self.checkpoint.sae

    @property
    def hook(self) -> str:
        return self.place.hook

    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    def activations(self, tokens: Tensor) -> Tensor:
        """The hook's activations [B, T, width] for `tokens` [B, T], from a forward that stops
        after the hooked block (on the SAE's device)."""
        acts, _ = self.model.capture(
            tokens.to(self.device), [self.hook], stop_at_layer=self.place.layer + 1
        )
        return acts[self.hook]


@dataclass
class EvalBatch:
    """One batch, computed once and shared by every plugin.

    `acts`, `recons` and `latents` hold only the evaluated positions (`mask`), flattened to
    [N, ...]. Log-probabilities are float32 [B, T, vocab], present only if some plugin asked
    for them; each set went through log-softmax once and is shared by every plugin (and, for
    the clean and ablated runs, by every SAE at the hook). `context` and `document` say where
    the tokens came from (the export's examples), when the data loader provides them;
    `positions` are `mask`'s true positions as flat indices, computed on the host.
    """

    tokens: Tensor
    mask: Tensor
    acts: Tensor
    recons: Tensor
    latents: SparseLatents | Tensor
    log_probs: Tensor | None = None
    spliced_log_probs: Tensor | None = None
    ablated_log_probs: Tensor | None = None
    context: Tensor | None = None  # [B] index of each context in the data
    document: Tensor | None = None  # [B, T] document id per position
    shared: dict[str, Tensor] = field(default_factory=dict)  # one dict for all of a batch's SAEs
    positions: Tensor | None = None

    def clean_probs(self) -> tuple[Tensor, Tensor]:
        """(p, sum_v p_v log p_v): the clean next-token probabilities [B, T, vocab] and their
        negative entropy [B, T], computed once per batch for every SAE (KL reads them)."""
        if "probs" not in self.shared:
            probs = self.log_probs.exp()
            self.shared["probs"] = probs
            self.shared["neg_entropy"] = torch.linalg.vecdot(probs, self.log_probs)
        return self.shared["probs"], self.shared["neg_entropy"]

    def active(self) -> tuple[Tensor, Tensor]:
        """(latent ids, values) of every non-zero latent activation in the batch."""
        if isinstance(self.latents, SparseLatents):
            fired = self.latents.values > 0
            return self.latents.indices[fired], self.latents.values[fired]
        rows, ids = self.latents.nonzero(as_tuple=True)
        return ids, self.latents[rows, ids]

    def by_context(self, per_row: Tensor) -> Tensor:
        """Sums over each context [B, ...] of values per evaluated row [N, ...] (rows of `mask`)."""
        if "row_context" not in self.shared:  # once per batch; no device sync given positions
            positions = self.positions
            if positions is None:
                positions = self.mask.flatten().nonzero().squeeze(1)
            self.shared["row_context"] = positions // self.mask.shape[1]
        which = self.shared["row_context"].to(per_row.device)
        out = torch.zeros(len(self.mask), *per_row.shape[1:], dtype=torch.float64,
                          device=per_row.device)  # fmt: skip
        return out.index_add_(0, which, per_row.double())

    def l0(self) -> Tensor:
        """Number of non-zero latents per token, [N]."""
        values = self.latents.values if isinstance(self.latents, SparseLatents) else self.latents
        return (values != 0).sum(-1)

    def l1(self) -> Tensor:
        """Sum of absolute latent values per token, [N]."""
        values = self.latents.values if isinstance(self.latents, SparseLatents) else self.latents
        return values.abs().sum(-1)


class EvalPlugin(Metric):
    """Base class of evaluation plugins. Subclasses implement `update` and `compute`.

    `needs`: what the evaluator must compute for this plugin beyond activations and SAE
    outputs (`LOG_PROBS`, `SPLICED_LOG_PROBS`, `ABLATED_LOG_PROBS`)."""

    needs: ClassVar[frozenset[str]] = frozenset()
    # how its results are defined where peers define them otherwise: saved in the provenance
    definitions: ClassVar[dict[str, str]] = {}
    full_state_update = False

    def setup(self, run: RunContext) -> None:
        """Called once before the first batch: register states whose shape depends on the SAE
        (`run.sae`), keep what else of the run the plugin reads."""

    def update(self, batch: EvalBatch) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float | Tensor]:
        raise NotImplementedError

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        """Write files for the viewer (after `compute`); return their paths."""
        return []

    def media(self, results: dict[str, float | Tensor]) -> dict[str, Any]:
        """W&B media (histograms, plots) of the results, logged with the scalars."""
        return {}

    def add_sum_state(self, name: str, shape: tuple[int, ...] = (), dtype=torch.float64) -> None:
        self.add_state(name, default=torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")

    def context_layout(self, run: RunContext) -> dict[str, int]:
        """The partial sums this plugin keeps per context for `context_estimates` (name ->
        length: 1 for a scalar, else a vector's), registered by `add_context_sums`; none here."""
        return {}

    def context_bytes(self, run: RunContext) -> int:
        """The bytes of state each context adds (its index, the scalars in float64, the
        vectors in float32): what `saelab sweep` counts against `sweep.memory_budget`."""
        layout = self.context_layout(run)
        scalars = sum(length == 1 for length in layout.values())
        return 8 * (1 + scalars) + 4 * (sum(layout.values()) - scalars) if layout else 0

    def add_context_sums(self, run: RunContext) -> None:
        """Keep `context_layout(run)`'s sums per context, gathered across ranks: a float64 row
        of the scalars and a float32 row of the vectors. A vector (e.g. per-dimension sums of
        the activations) is a sum over one context's tokens, so float32 keeps ~7 digits of
        each context's row at half the bytes; totals and influences are summed in float64."""
        layout = self.context_layout(run)
        # scalars first: the columns of `context_sums`, then those of `context_vectors`
        self.context_names = dict(sorted(layout.items(), key=lambda item: item[1] > 1))
        self.scalar_names = [name for name, length in self.context_names.items() if length == 1]
        self.vector_names = [name for name, length in self.context_names.items() if length > 1]
        self.add_state("contexts", default=[], dist_reduce_fx="cat")
        self.add_state("context_sums", default=[], dist_reduce_fx="cat")
        if self.vector_names:
            self.add_state("context_vectors", default=[], dist_reduce_fx="cat")

    def add_to_contexts(self, batch: EvalBatch, **sums: Tensor) -> None:
        """One row per context of the batch: `sums[name]` [B] (or [B, length]) for each of
        `context_names`. Contexts without an index in the data (`batch.context` None) are
        recorded as -1."""

        def rows(names: list[str], dtype: torch.dtype) -> Tensor:
            return torch.cat([sums[name].to(dtype).reshape(len(batch.tokens), -1)
                              for name in names], 1)  # fmt: skip

        scalars = rows(self.scalar_names, torch.float64)
        ids = batch.context if batch.context is not None else torch.full((len(scalars),), -1)
        self.contexts.append(ids.to(scalars.device, torch.long))
        self.context_sums.append(scalars)
        if self.vector_names:
            self.context_vectors.append(rows(self.vector_names, torch.float32))

    def context_estimates(
        self, formulas: Callable[[dict[str, Tensor]], dict[str, Tensor]]
    ) -> dict[str, Estimate]:
        """`formulas` of the totals of the context sums, each with its standard error."""
        if len(self.contexts) == 0:  # no batch: NaN values, as sums of nothing divided by 0
            ids = torch.zeros(0, dtype=torch.long)
            sums = torch.zeros(0, sum(self.context_names.values()), dtype=torch.float64)
        else:
            ids, sums = dim_zero_cat(self.contexts), dim_zero_cat(self.context_sums)
            if self.vector_names:
                sums = torch.cat([sums, dim_zero_cat(self.context_vectors).double()], 1)
        return estimates(ids, sums, self.context_names, formulas)
