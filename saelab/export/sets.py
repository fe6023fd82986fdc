"""An example set's buffers as numpy arrays, and its examples as the export's JSON dicts: what
the writer and the explanations read of the pass's examples."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from saelab.evals.base import RunContext
from saelab.export.ablation import ablation_effects
from saelab.export.examples import ExampleSet


def round_acts(acts: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """To 4 significant digits (float16 carries about 3.3), so the JSON stays short; float64
    (so that JSON prints the short decimal), computed `chunk` values at a time so that its
    temporaries stay small next to every latent's example windows."""
    flat = acts.reshape(-1)
    out = np.empty(flat.shape)
    for start in range(0, len(flat), chunk):
        part = flat[start : start + chunk].astype(np.float64)
        magnitude = np.floor(np.log10(np.abs(part), where=part != 0, out=np.ones_like(part)))
        scale = 10.0 ** (3 - magnitude)
        out[start : start + chunk] = np.where(part != 0, np.round(part * scale) / scale, 0.0)
    return out.reshape(acts.shape)


class Sets:
    """One example set's buffers as numpy arrays, and its examples as JSON-ready dicts."""

    def __init__(self, examples: ExampleSet, left: int) -> None:
        self.valid = (examples.score > -np.inf).cpu().numpy()
        self.act = examples.act.cpu().numpy()
        self.act_rounded = round_acts(self.act)
        self.ctx = examples.ctx.cpu().numpy()
        self.doc = examples.doc.cpu().numpy()
        self.pos = examples.pos.cpu().numpy()
        self.key = examples.key.cpu().numpy()
        self.tokens = examples.tokens.cpu().numpy()
        self.acts = round_acts(examples.acts.float().cpu().numpy())
        self.left = left
        self.effects: dict[str, np.ndarray] = {}  # loss_diff, kl [n, m, W] with ablation

    def example(self, latent: int, slot: int) -> dict[str, Any]:
        tokens = self.tokens[latent, slot]
        inside = tokens >= 0
        first = int(inside.argmax())
        return {
            "doc": int(self.doc[latent, slot]),
            "ctx": int(self.ctx[latent, slot]),
            "pos": int(self.pos[latent, slot]),
            "idx": self.left - first,
            "act": float(self.act_rounded[latent, slot]),
            "tokens": tokens[inside].tolist(),
            "acts": self.acts[latent, slot][inside].tolist(),
            **{name: e[latent, slot][inside].tolist() for name, e in self.effects.items()},
        }

    def add_ablation(self, run: RunContext, right: int) -> None:
        """Every kept example's loss change and KL with its latent removed (docs: ablation)."""
        latent, slot = np.nonzero(self.valid)
        picked = {"latent": latent, "ctx": self.ctx[latent, slot], "pos": self.pos[latent, slot]}
        picked = {k: torch.from_numpy(v.astype(np.int64)) for k, v in picked.items()}
        picked["act"] = torch.from_numpy(self.act[latent, slot])
        offsets = torch.arange(-self.left, right + 1)
        found = ablation_effects(run, picked, offsets)
        for name, values in zip(("loss_diff", "kl"), found, strict=True):
            self.effects[name] = np.zeros(self.tokens.shape)
            self.effects[name][latent, slot] = round_acts(values.numpy())


def distinct(sets: Sets, latent: int, slots: np.ndarray) -> np.ndarray:
    """`slots` in order, less those whose window key an earlier slot has (near-identical)."""
    _, first = np.unique(sets.key[latent, slots], return_index=True)
    return slots[np.sort(first)]
