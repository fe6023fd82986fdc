"""Writes an export directory (docs/export-format.md): records first, `manifest.json` last."""

from __future__ import annotations

import base64
import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from saelab.export import weights
from saelab.export.ablation import ablation_effects
from saelab.export.openai_format import feature_info
from saelab.export.vocab import token_bytes
from saelab.io import atomic_write, write_json

if TYPE_CHECKING:
    from saelab.export.plugin import Export, ExportContext

SCHEMA = "saelab-export/1"
SEARCH_PER_TOKEN = 50


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

    def __init__(self, examples: Any, left: int) -> None:
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

    def add_ablation(self, plugin: Export, context: ExportContext) -> None:
        """Every kept example's loss change and KL with its latent removed (docs: ablation)."""
        latent, slot = np.nonzero(self.valid)
        picked = {"latent": latent, "ctx": self.ctx[latent, slot], "pos": self.pos[latent, slot]}
        picked = {k: torch.from_numpy(v.astype(np.int64)) for k, v in picked.items()}
        picked["act"] = torch.from_numpy(self.act[latent, slot])
        offsets = torch.arange(-self.left, plugin.window[1] + 1)
        found = ablation_effects(
            context.model, context.hook, context.layer, plugin.sae, context.data.tokens,
            picked, offsets, context.data.batch_size,
        )  # fmt: skip
        for name, values in zip(("loss_diff", "kl"), found, strict=True):
            self.effects[name] = np.zeros(self.tokens.shape)
            self.effects[name][latent, slot] = round_acts(values.numpy())


def distinct(sets: Sets, latent: int, slots: np.ndarray) -> np.ndarray:
    """`slots` in order, less those whose window key an earlier slot has (near-identical)."""
    _, first = np.unique(sets.key[latent, slots], return_index=True)
    return slots[np.sort(first)]


def intervals(reservoir: Sets, latent: int, n_intervals: int, per_interval: int) -> list[dict]:
    """Quantile intervals of the latent's reservoir (a uniform sample of its positive
    events): sorted by activation, cut into `n_intervals` groups, up to `per_interval` distinct
    windows from each (the bounds count every sampled event, duplicates included)."""
    slots = np.flatnonzero(reservoir.valid[latent])
    slots = slots[np.argsort(reservoir.act[latent, slots], kind="stable")]
    bins: list[dict] = []
    if len(slots) == 0:
        return bins
    for group in np.array_split(slots, min(n_intervals, len(slots))):
        unique = distinct(reservoir, latent, group)
        picks = np.linspace(0, len(unique) - 1, min(per_interval, len(unique))).astype(int)
        chosen = unique[picks]
        bins.append(
            {
                "lo": float(reservoir.act[latent, group[0]]),
                "hi": float(reservoir.act[latent, group[-1]]),
                "examples": [reservoir.example(latent, int(s)) for s in chosen],
            }
        )
    return bins


def search_index(top: Sets, n_latents: int) -> dict[str, list[list]]:
    """Token id -> [[latent, act], ...]: the latents whose top examples select that token,
    each with its largest such activation, sorted by it (at most `SEARCH_PER_TOKEN`)."""
    latent, slot = np.nonzero(top.valid)
    token = top.tokens[latent, slot, top.left].astype(np.int64)
    act = top.act[latent, slot]
    order = np.lexsort((-act, latent, token))
    token, latent, act = token[order], latent[order], act[order]
    first = np.ones(len(token), dtype=bool)
    first[1:] = (token[1:] != token[:-1]) | (latent[1:] != latent[:-1])
    token, latent, act = token[first], latent[first], act[first]
    order = np.lexsort((-act, token))
    token, latent, act = token[order], latent[order], act[order]
    out: dict[str, list[list]] = {}
    for t, lat, a in zip(token.tolist(), latent.tolist(), act.tolist(), strict=True):
        hits = out.setdefault(str(t), [])
        if len(hits) < SEARCH_PER_TOKEN:
            hits.append([lat, round(a, 4)])
    return out


def pairs(ids: np.ndarray, values: np.ndarray) -> list[list]:
    return [[i, round(v, 4)] for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def trimmed_hist(edges: np.ndarray, counts: np.ndarray) -> dict[str, list]:
    nonzero = np.flatnonzero(counts)
    if len(nonzero) == 0:
        return {"edges": [], "counts": []}
    lo, hi = nonzero[0], nonzero[-1] + 1
    edges = [float(f"{e:.6g}") for e in edges[lo : hi + 1]]
    return {"edges": edges, "counts": counts[lo:hi].tolist()}


def write_export(
    plugin: Export, results: dict[str, float | Tensor], out: Path, context: ExportContext
) -> Path:
    """Write every file of the export under `out`; returns the manifest's path."""
    from saelab.export.plugin import hist_edges

    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # an export being rewritten is not complete
    n_latents = plugin.sae.n_latents
    stats = {
        key.removeprefix("export/"): value.cpu().numpy()
        for key, value in results.items()
        if key.startswith("export/")
    }
    left = plugin.window[0]
    top, reservoir = Sets(plugin.top, left), Sets(plugin.reservoir, left)
    if plugin.ablation:
        top.add_ablation(plugin, context)
    edges = hist_edges().numpy()
    hist = plugin.hist.cpu().numpy()
    W_dec = plugin.sae.W_dec.detach()
    model = context.model
    logits = [
        t.numpy()
        for t in weights.logit_effects(
            model, context.location, context.layer, W_dec, plugin.n_logits
        )
    ]
    near_ids, near_cos = (t.numpy() for t in weights.neighbours(W_dec, plugin.n_neighbours))

    raw = token_bytes(model.tokenizer, model.vocab_size)
    strings = [b.decode("utf-8", errors="replace") for b in raw]
    write_json(
        out / "vocab.json",
        {"bytes": [base64.b64encode(b).decode() for b in raw], "strings": strings},
    )
    openai = plugin.format == "openai"
    total_bytes = 0
    for i in tqdm(range(n_latents), desc="write latents", unit="latent", leave=False):
        record = {
            "id": i,
            "density": float(stats["density"][i]),
            "mean_act": float(stats["mean_act"][i]),
            "mean_act_squared": float(stats["mean_act_squared"][i]),
            "skew": float(stats["skew"][i]),
            "kurtosis": float(stats["kurtosis"][i]),
            "max_act": float(top.act[i, 0]) if top.valid[i, 0] else 0.0,
            "n_fired": int(stats["n_fired"][i]),
            "hist": trimmed_hist(edges, hist[i]),
            "logits": {
                "top": pairs(logits[0][i], logits[1][i]),
                "bottom": pairs(logits[2][i], logits[3][i]),
            },
            "neighbours": pairs(near_ids[i], near_cos[i]),
            "top": [top.example(i, s) for s in np.flatnonzero(top.valid[i])],
            "intervals": {
                "kind": "quantile",
                "bins": intervals(reservoir, i, plugin.n_intervals, plugin.per_interval),
            },
            "random": [
                reservoir.example(i, int(s))
                for s in distinct(reservoir, i, np.flatnonzero(reservoir.valid[i]))[
                    : plugin.n_random
                ]
            ],
        }
        data = gzip.compress(json.dumps(record, separators=(",", ":")).encode(), mtime=0)
        atomic_write(out / "latents" / f"{i}.json.gz", lambda f, d=data: f.write(d), sync=False)
        total_bytes += len(data)
        if openai:
            text = json.dumps(feature_info(record, strings), separators=(",", ":")).encode()
            atomic_write(out / "openai" / f"{i}.json", lambda f, d=text: f.write(d), sync=False)

    write_json(
        out / "latents.json",
        {
            "density": stats["density"].tolist(),
            "mean_act": stats["mean_act"].tolist(),
            "max_act": np.where(top.valid[:, 0], top.act[:, 0], 0.0).tolist(),
            "top_token": np.where(top.valid[:, 0], top.tokens[:, 0, left], -1).tolist(),
        },
    )
    write_json(out / "search.json", search_index(top, n_latents))
    os.sync()  # the records reach the disk before the manifest that vouches for them
    sae = context.loaded.provenance()
    data = context.data
    files = {
        "vocab": "vocab.json",
        "latents": "latents.json",
        "search": "search.json",
        "latent": "latents/{id}.json.gz",
    }
    if openai:
        files["openai"] = "openai/{id}.json"
    manifest = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.name,
        "hook": context.hook,
        "layer": context.layer,
        "location": context.location,
        "sae": {
            "source": sae["sae_source"],
            "sha256": sae["sae_sha256"],
            "n_latents": n_latents,
            "k": sae["sae_k"],
            "activation": sae["sae_activation"],
        },
        "data": {
            "name": data.source.name,
            "n_tokens": int(plugin.n),
            "n_ctx": data.n_ctx,
            "first_position_excluded": data.exclude_first,
        },
        "seed": context.seed,
        "settings": {
            "n_top": plugin.n_top,
            "n_intervals": plugin.n_intervals,
            "per_interval": plugin.per_interval,
            "n_random": plugin.n_random,
            "reservoir": plugin.reservoir_size,
            "intervals": "quantile",
            "window": list(plugin.window),
            "n_logits": plugin.n_logits,
            "n_neighbours": plugin.n_neighbours,
            "hist_edges": "log10",
            "dedup": plugin.dedup,
            "ablation": plugin.ablation,
        },
        "n_latents": n_latents,
        "bytes_per_latent": round(total_bytes / n_latents, 1),
        "files": files,
    }
    return write_json(manifest_path, manifest)
