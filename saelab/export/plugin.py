"""The export as an evaluation plugin: every latent's statistics and examples in the eval's pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saelab.errors import UserError
from saelab.evals.base import EvalBatch, EvalPlugin
from saelab.export.examples import Events, ExampleSet, Windows
from saelab.sae.autoencoder import Autoencoder

# Fixed log-spaced histogram bins shared by all latents: a single pass cannot know each
# latent's maximum beforehand, and fixed edges make the per-batch update one `index_add_`.
HIST_LOG10_MIN, HIST_PER_DECADE, HIST_BINS = -4.0, 20, 160
FORMATS = ("saelab", "openai")


def hist_edges() -> Tensor:
    steps = torch.arange(HIST_BINS + 1, dtype=torch.float64)
    return 10 ** (HIST_LOG10_MIN + steps / HIST_PER_DECADE)


def hist_bins(act: Tensor) -> Tensor:
    """The bin of each positive activation; values outside the edges go to the end bins."""
    bins = ((act.double().log10() - HIST_LOG10_MIN) * HIST_PER_DECADE).floor()
    return bins.clamp(0, HIST_BINS - 1).long()


@dataclass
class ExportContext:
    """What the writer needs beyond the plugin's state: the model, SAE and data of the run."""

    model: Any  # ModelSource
    location: str
    layer: int
    hook: str
    loaded: Any  # LoadedSAE
    data: Any  # TokenDataModule
    seed: int


class Export(EvalPlugin):
    """Per-latent statistics, histogram and examples (top, reservoir) for the viewer.

    Memory is independent of the token count: per-latent sums and fixed-size example sets
    merged every batch. The SAE's own encode selects the latents (TopK across all latents).
    `save_artifacts` writes the format of docs/export-format.md under `out_dir / subdir`.
    """

    def __init__(
        self,
        n_top: int = 20,
        n_intervals: int = 10,
        per_interval: int = 5,
        n_random: int = 10,
        window: tuple[int, int] = (16, 4),
        n_logits: int = 10,
        n_neighbours: int = 10,
        dedup: int | None = 8,
        ablation: bool = False,
        format: str = "saelab",
        subdir: str = "",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise UserError(f"export.format must be one of {', '.join(FORMATS)}, not {format!r}")
        if min(n_top, n_intervals, per_interval, n_random) < 1 or min(window) < 0:
            raise UserError("export sizes must be positive and the window's sides non-negative")
        if dedup is not None and dedup < 0:
            raise UserError(f"export.dedup must be null or a non-negative count, not {dedup}")
        self.n_top, self.n_intervals, self.per_interval = n_top, n_intervals, per_interval
        self.n_random, self.window = n_random, (int(window[0]), int(window[1]))
        self.n_logits, self.n_neighbours = n_logits, n_neighbours
        self.dedup, self.ablation = dedup, ablation
        self.format, self.subdir, self.seed = format, subdir, seed
        self.reservoir_size = max(n_intervals * per_interval, n_random)
        self.context: ExportContext | None = None
        self.generator: torch.Generator | None = None

    def setup(self, sae: Autoencoder) -> None:
        n, width = sae.n_latents, sum(self.window) + 1
        self.sae = sae
        self.add_sum_state("n", dtype=torch.long)
        self.add_sum_state("fired", (n,), dtype=torch.long)
        self.add_sum_state("moments", (n, 4))  # sums of a, a², a³, a⁴ over positive events
        self.add_sum_state("hist", (n, HIST_BINS), dtype=torch.long)
        self.top = ExampleSet(n, self.n_top, width, dedup=True)
        self.reservoir = ExampleSet(n, self.reservoir_size, width, dedup=False)

    def update(self, batch: EvalBatch) -> None:
        events = Events.of(batch)
        self.n += len(batch.acts)
        self.fired += torch.bincount(events.latent, minlength=len(self.fired))
        act = events.act.double()
        powers = torch.stack([act, act**2, act**3, act**4], 1)
        self.moments.index_add_(0, events.latent, powers)
        flat = events.latent * HIST_BINS + hist_bins(events.act)
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))
        windows = Windows(batch, *self.window, self.dedup)
        self.top.merge(events, events.act, windows)
        if self.generator is None or self.generator.device != act.device:
            self.generator = torch.Generator(act.device).manual_seed(self.seed)
        keys = torch.rand(len(act), generator=self.generator, device=act.device)
        self.reservoir.merge(events, -keys, windows)

    def compute(self) -> dict[str, float | Tensor]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise UserError("the export runs on one process: use trainer=default")
        fired = self.fired.double()
        safe = fired.clamp(min=1)
        mean, sq, cube, fourth = (self.moments / safe[:, None]).unbind(1)
        sq_safe = sq.clamp(min=torch.finfo(torch.float64).tiny)
        live = fired > 0
        return {
            "export/density": fired / self.n.clamp(min=1),
            "export/mean_act": mean,
            "export/mean_act_squared": sq,
            "export/skew": torch.where(live, cube / sq_safe**1.5, 0),
            "export/kurtosis": torch.where(live, fourth / sq_safe**2, 0),
            "export/n_fired": self.fired,
        }

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        from saelab.export.writer import write_export

        if self.context is None:
            raise UserError("the export plugin was not given its run (ExportContext)")
        return [write_export(self, results, Path(out_dir) / self.subdir, self.context)]
