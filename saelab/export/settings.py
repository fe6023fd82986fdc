"""What an export keeps and writes: its settings, and the histogram bins every latent shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saelab.errors import UserError

# Fixed log-spaced histogram bins shared by all latents: a single pass cannot know each
# latent's maximum beforehand, and fixed edges make the per-batch update one `index_add_`.
HIST_LOG10_MIN, HIST_PER_DECADE, HIST_BINS = -4.0, 20, 160
EXPORT_FORMATS = ("saelab", "openai")  # saelab's files, or those plus OpenAI's viewer's


def hist_edges() -> Tensor:
    steps = torch.arange(HIST_BINS + 1, dtype=torch.float64)
    return 10 ** (HIST_LOG10_MIN + steps / HIST_PER_DECADE)


def hist_bins(act: Tensor) -> Tensor:
    """The bin of each positive activation; values outside the edges go to the end bins."""
    bins = ((act.double().log10() - HIST_LOG10_MIN) * HIST_PER_DECADE).floor()
    return bins.clamp(0, HIST_BINS - 1).long()


@dataclass(frozen=True)
class ExportSettings:
    """The `export:` options (conf/export.yaml says what each one is)."""

    n_top: int = 20
    n_intervals: int = 10
    per_interval: int = 5
    n_random: int = 10
    window: tuple[int, int] = (16, 4)
    n_logits: int = 10
    n_neighbours: int = 10
    dedup: int | None = 8
    ablation: bool = False
    explain: bool = False
    format: str = "saelab"
    subdir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", (int(self.window[0]), int(self.window[1])))
        if self.format not in EXPORT_FORMATS:
            raise UserError(
                f"export.format must be one of {', '.join(EXPORT_FORMATS)}, not {self.format!r}"
            )
        if (
            min(self.n_top, self.n_intervals, self.per_interval, self.n_random) < 1
            or min(self.window) < 0
        ):
            raise UserError("export sizes must be positive and the window's sides non-negative")
        if self.dedup is not None and self.dedup < 0:
            raise UserError(f"export.dedup must be null or a non-negative count, not {self.dedup}")

    @property
    def reservoir_size(self) -> int:
        """A uniform sample of each latent's events, large enough for intervals and random."""
        return max(self.n_intervals * self.per_interval, self.n_random)

    @property
    def width(self) -> int:
        return sum(self.window) + 1
