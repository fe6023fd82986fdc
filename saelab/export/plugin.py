"""The export as an evaluation plugin: every latent's statistics and examples in the eval's pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.data.tokens import distributed_rank
from saelab.errors import UserError
from saelab.evals.base import EvalBatch, EvalPlugin, RunContext
from saelab.export.examples import Events, ExampleSet, Windows, uniform_keys
from saelab.export.explain import Explained, ExplainSettings, explain_latents
from saelab.export.sets import Sets
from saelab.export.settings import HIST_BINS, ExportSettings, hist_bins
from saelab.export.writer import ExportState, write_export


class Export(EvalPlugin):
    """Per-latent statistics, histogram and examples (top, reservoir) for the viewer.

    Memory is independent of the token count: per-latent sums and fixed-size example sets
    merged every batch. The SAE's own encode selects the latents (TopK across all latents).
    `save_artifacts` writes the format of docs/export-format.md under `out_dir / subdir`.
    Keyword arguments are `ExportSettings`; `explain_settings` are `ExplainSettings` (read
    with `explain=True`: N2G explanations, built and scored in `compute` from the examples
    the pass kept, on rank 0 alone under DDP).
    """

    def __init__(self, explain_settings: dict[str, Any] | None = None, **settings: Any) -> None:
        super().__init__()
        try:
            self.settings = ExportSettings(**settings)
            self.explain_settings = ExplainSettings(**(explain_settings or {}))
        except TypeError as error:
            raise UserError(f"bad export setting: {error}") from None
        self.run: RunContext | None = None
        self.explained: Explained | None = None

    def setup(self, run: RunContext) -> None:
        n, settings = run.sae.n_latents, self.settings
        self.run = run
        self.add_sum_state("n", dtype=torch.long)
        self.add_sum_state("fired", (n,), dtype=torch.long)
        self.add_sum_state("moments", (n, 4))  # sums of a, a², a³, a⁴ over positive events
        self.add_sum_state("hist", (n, HIST_BINS), dtype=torch.long)
        self.top = ExampleSet(n, settings.n_top, settings.width, dedup=True)
        self.reservoir = ExampleSet(n, settings.reservoir_size, settings.width, dedup=False)

    def update(self, batch: EvalBatch) -> None:
        events = Events.of(batch)
        self.n += len(batch.acts)
        self.fired += torch.bincount(events.latent, minlength=len(self.fired))
        act = events.act.double()
        powers = torch.stack([act, act**2, act**3, act**4], 1)
        self.moments.index_add_(0, events.latent, powers)
        flat = events.latent * HIST_BINS + hist_bins(events.act)
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))
        windows = Windows(batch, *self.settings.window, self.settings.dedup)
        place = windows.place(events.row)
        # equal activations (the same token right after BOS, say) are ordered by a key of the
        # event itself, far below float32's resolution: the same top examples, in the same
        # order, however the data is batched or shared across ranks
        tie_break = 1 + uniform_keys(self.run.seed + 1, *place) * 2.0**-30
        self.top.merge(events, events.act.double() * tie_break, windows)
        keys = uniform_keys(self.run.seed, *place, events.latent)
        self.reservoir.merge(events, -keys, windows)  # the events with the smallest keys

    def compute(self) -> dict[str, float | Tensor]:
        """Sums are reduced across DDP ranks by torchmetrics; the example sets here."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.top.gather_ranks()
            self.reservoir.gather_ranks()
        fired = self.fired.double()
        safe = fired.clamp(min=1)
        mean, sq, cube, fourth = (self.moments / safe[:, None]).unbind(1)
        sq_safe = sq.clamp(min=torch.finfo(torch.float64).tiny)
        live = fired > 0
        results: dict[str, float | Tensor] = {}
        if self.settings.explain and distributed_rank()[0] == 0:  # only rank 0 writes them
            left = self.settings.window[0]
            self.explained = explain_latents(
                self.run,
                self.explain_settings,
                Sets(self.top, left),
                Sets(self.reservoir, left),
                self.settings.n_random,
                self.fired.cpu().numpy(),
            )
            results.update(self.explained.results())
        return results | {
            "export/density": fired / self.n.clamp(min=1),
            "export/mean_act": mean,
            "export/mean_act_squared": sq,
            "export/skew": torch.where(live, cube / sq_safe**1.5, 0),
            "export/kurtosis": torch.where(live, fourth / sq_safe**2, 0),
            "export/n_fired": self.fired,
            # read by the writer from here: torchmetrics restores each rank's own states
            # once `compute` returns, so only what it returns is reduced across ranks
            "export/hist": self.hist.clone(),
            "export/n_tokens": self.n.clone(),
        }

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        state = ExportState(
            self.settings, self.run, results, self.top, self.reservoir, self.explained
        )
        return [write_export(state, Path(out_dir) / self.settings.subdir)]
