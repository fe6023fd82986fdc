"""How often each latent fires: dead and dense latents, and the log-density histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saelab.evals.base import EvalBatch, EvalPlugin, RunContext
from saelab.io import atomic_write

DENSE_THRESHOLD = 0.1
HISTOGRAM_BINS = np.linspace(-8, 0, 41)


class Density(EvalPlugin):
    """Per-latent firing frequency over the evaluated tokens.

    `density/frequencies` (one value per latent) is saved as `latent_density.npy` for the
    viewer, with a plot of its log10 histogram; dead latents never fired on these tokens.
    """

    def setup(self, run: RunContext) -> None:
        self.add_sum_state("n", dtype=torch.long)
        self.add_sum_state("fired", (run.sae.n_latents,), dtype=torch.long)

    def update(self, batch: EvalBatch) -> None:
        ids, _ = batch.active()
        self.n += len(batch.acts)
        self.fired += torch.bincount(ids, minlength=len(self.fired))

    def compute(self) -> dict[str, float | Tensor]:
        frequencies = self.fired.double() / self.n
        dead = self.fired == 0
        return {
            "density/dead_count": int(dead.sum()),
            "density/dead_fraction": dead.double().mean().item(),
            "density/dense_fraction": (frequencies > DENSE_THRESHOLD).double().mean().item(),
            "density/frequencies": frequencies,
            "density/log10_histogram": log10_histogram(frequencies),
        }

    def save_artifacts(self, results: dict[str, float | Tensor], out_dir: Path) -> list[Path]:
        frequencies = results["density/frequencies"].cpu().numpy()
        npy = out_dir / "latent_density.npy"
        atomic_write(npy, lambda f: np.save(f, frequencies))
        png = out_dir / "density_histogram.png"
        atomic_write(png, lambda f: plot_histogram(frequencies, f))
        return [npy, png]

    def media(self, results: dict[str, float | Tensor]) -> dict[str, Any]:
        histogram = wandb_histogram(results["density/frequencies"])
        return {"density/log10_frequency": histogram} if histogram is not None else {}


def wandb_histogram(frequencies: Tensor) -> Any:
    """A W&B histogram of the live latents' log10 firing frequency (None if none fired)."""
    import wandb

    live = frequencies[frequencies > 0].log10().cpu().numpy()
    return wandb.Histogram(live, num_bins=40) if len(live) else None


def log10_histogram(frequencies: Tensor) -> Tensor:
    """Counts of live latents per log10-frequency bin (edges `HISTOGRAM_BINS`)."""
    live = frequencies[frequencies > 0].log10().clamp(HISTOGRAM_BINS[0], HISTOGRAM_BINS[-1])
    edges = torch.as_tensor(HISTOGRAM_BINS, dtype=live.dtype, device=live.device)
    return torch.histogram(live.cpu(), bins=edges.cpu()).hist


def plot_histogram(frequencies: np.ndarray, f) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = frequencies[frequencies > 0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.log10(live), bins=HISTOGRAM_BINS, color="#4c72b0")
    ax.axvline(np.log10(DENSE_THRESHOLD), color="#c44e52", ls="--", lw=1, label="dense (10%)")
    dead = int((frequencies == 0).sum())
    ax.set(
        xlabel="log10 firing frequency",
        ylabel="latents",
        title=f"{len(frequencies)} latents, {dead} dead",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
