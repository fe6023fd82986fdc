"""Writes an export directory (docs/export-format.md) from a snapshot of the export plugin's
state (`ExportState`): vocab and per-latent records first, the tables, `manifest.json` last."""

from __future__ import annotations

import base64
import gzip
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from tqdm import tqdm

from saelab.evals.ablation_sparsity import per_latent_means
from saelab.evals.base import RunContext
from saelab.export.examples import ExampleSet
from saelab.export.explain import Explained
from saelab.export.openai_format import feature_info
from saelab.export.sets import Sets, distinct
from saelab.export.settings import ExportSettings, hist_edges
from saelab.export.vocab import token_bytes
from saelab.export.weights import logit_effects, neighbours
from saelab.io import atomic_write, write_json

SCHEMA = "saelab-export/1"
SEARCH_PER_TOKEN = 50


@dataclass
class ExportState:
    """What the export plugin gathered in the pass, and the run it gathered it in."""

    settings: ExportSettings
    run: RunContext
    results: dict[str, float | Tensor]  # its `compute()`: export/density, mean_act, ...
    top: ExampleSet
    reservoir: ExampleSet
    explained: Explained | None = None  # with `explain`: the N2G explanations and scores


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


def write_export(state: ExportState, out: Path) -> Path:
    """Write every file of the export under `out`; returns the manifest's path."""
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # an export being rewritten is not complete
    settings, run = state.settings, state.run
    stats = {
        key.removeprefix("export/"): value.cpu().numpy()
        for key, value in state.results.items()
        if key.startswith("export/")
    }
    top = Sets(state.top, settings.window[0])
    reservoir = Sets(state.reservoir, settings.window[0])
    if settings.ablation:
        top.add_ablation(run, settings.window[1])
    strings = write_vocab(out, run)
    total_bytes = write_latents(out, state, stats, top, reservoir, strings)
    table = latent_table(stats, top, state.explained)
    if (ablation := per_latent_means(state.results)) is not None:
        table["ablation_sparsity"] = ablation
    write_json(out / "latents.json", table)
    write_json(out / "search.json", search_index(top, run.sae.n_latents))
    if state.explained is not None:
        write_json(out / "explain.json", explain_index(state.explained))
    os.sync()  # the records reach the disk before the manifest that vouches for them
    return write_json(manifest_path, manifest(state, total_bytes))


def write_vocab(out: Path, run: RunContext) -> list[str]:
    """`vocab.json`: each token's bytes (base64) and text; returns the texts."""
    model = run.model
    raw = token_bytes(model.tokenizer, range(model.vocab_size))
    strings = [b.decode("utf-8", errors="replace") for b in raw]
    write_json(
        out / "vocab.json",
        {"bytes": [base64.b64encode(b).decode() for b in raw], "strings": strings},
    )
    return strings


def write_latents(
    out: Path,
    state: ExportState,
    stats: dict[str, np.ndarray],
    top: Sets,
    reservoir: Sets,
    strings: list[str],
) -> int:
    """`latents/<id>.json.gz` (and OpenAI's `openai/<id>.json`) for every latent; returns the
    bytes written."""
    settings, run = state.settings, state.run
    W_dec = run.sae.W_dec.detach()
    logits = [t.numpy() for t in logit_effects(run, W_dec, settings.n_logits)]
    near = [t.numpy() for t in neighbours(W_dec, settings.n_neighbours)]
    edges, hist = hist_edges().numpy(), stats["hist"]
    ablation = per_latent_means(state.results)
    total_bytes = 0
    for i in tqdm(range(run.sae.n_latents), desc="write latents", unit="latent", leave=False):
        record = {
            "id": i,
            **{key: float(stats[key][i]) for key in STAT_KEYS},
            "max_act": float(top.act[i, 0]) if top.valid[i, 0] else 0.0,
            "n_fired": int(stats["n_fired"][i]),
            "hist": trimmed_hist(edges, hist[i]),
            "logits": {
                "top": pairs(logits[0][i], logits[1][i]),
                "bottom": pairs(logits[2][i], logits[3][i]),
            },
            "neighbours": pairs(near[0][i], near[1][i]),
            **examples(i, settings, top, reservoir),
        }
        if state.explained is not None and i in state.explained.explanations:
            add_explanation(record, state.explained)
        if ablation is not None and ablation[i] is not None:
            record["ablation_sparsity"] = ablation[i]
        data = gzip.compress(json.dumps(record, separators=(",", ":")).encode(), mtime=0)
        atomic_write(out / "latents" / f"{i}.json.gz", lambda f, d=data: f.write(d), sync=False)
        total_bytes += len(data)
        if settings.format == "openai":
            text = json.dumps(feature_info(record, strings), separators=(",", ":")).encode()
            atomic_write(out / "openai" / f"{i}.json", lambda f, d=text: f.write(d), sync=False)
    return total_bytes


STAT_KEYS = ("density", "mean_act", "mean_act_squared", "skew", "kurtosis")


def examples(latent: int, settings: ExportSettings, top: Sets, reservoir: Sets) -> dict[str, Any]:
    """A latent's top examples, quantile intervals and random examples."""
    random = distinct(reservoir, latent, np.flatnonzero(reservoir.valid[latent]))
    return {
        "top": [top.example(latent, s) for s in np.flatnonzero(top.valid[latent])],
        "intervals": {
            "kind": "quantile",
            "bins": intervals(reservoir, latent, settings.n_intervals, settings.per_interval),
        },
        "random": [reservoir.example(latent, int(s)) for s in random[: settings.n_random]],
    }


def add_explanation(record: dict[str, Any], explained: Explained) -> None:
    """The latent's `explanation`, and its prediction at every token of each example."""
    latent = record["id"]
    record["explanation"] = explained.record(latent)
    shown = record["top"] + record["random"]
    shown += [e for interval in record["intervals"]["bins"] for e in interval["examples"]]
    for example in shown:
        example["predicted"] = explained.predict_example(latent, example)


def explain_index(explained: Explained) -> dict[str, list[list]]:
    """`explain.json`: token id -> [[latent, F1], ...], the latents whose explanation names
    that token, best F1 first (unscored latents last, F1 null)."""
    out: dict[str, list[list]] = {}
    for latent, explanation in explained.explanations.items():
        f1 = explained.scores.get(latent, {}).get("f1")
        for token in explanation.tokens():
            out.setdefault(str(token), []).append([latent, None if f1 is None else round(f1, 4)])
    for hits in out.values():
        hits.sort(key=lambda hit: -1.0 if hit[1] is None else -hit[1])
    return dict(sorted(out.items(), key=lambda item: int(item[0])))


def latent_table(
    stats: dict[str, np.ndarray], top: Sets, explained: Explained | None = None
) -> dict[str, list]:
    """`latents.json`: the per-latent columns the viewer's list and sorting read (with
    explanations, `explain_f1`: null for a latent not scored)."""
    first = top.valid[:, 0]
    table = {
        "density": stats["density"].tolist(),
        "mean_act": stats["mean_act"].tolist(),
        "max_act": np.where(first, top.act[:, 0], 0.0).tolist(),
        "top_token": np.where(first, top.tokens[:, 0, top.left], -1).tolist(),
    }
    if explained is not None:
        table["explain_f1"] = [None] * len(first)
        for latent, scores in explained.scores.items():
            table["explain_f1"][latent] = round(scores["f1"], 4)
    return table


def manifest(state: ExportState, total_bytes: int) -> dict[str, Any]:
    """`manifest.json`: what was exported, from what, with which settings (written last)."""
    settings, run = state.settings, state.run
    sae, data, n_latents = run.checkpoint.provenance(), run.data, run.sae.n_latents
    files = {
        "vocab": "vocab.json",
        "latents": "latents.json",
        "search": "search.json",
        "latent": "latents/{id}.json.gz",
    }
    if settings.format == "openai":
        files["openai"] = "openai/{id}.json"
    explain: dict[str, Any] | bool = False
    if state.explained is not None:
        files["explain"] = "explain.json"
        explain = {
            "method": "n2g",
            "n_explained": len(state.explained.explanations),
            "n_scored": len(state.explained.scores),
            "padding_token": state.explained.padding,
        }
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": run.model.name,
        "hook": run.hook,
        "layer": run.place.layer,
        "location": run.place.location,
        "sae": {
            "source": sae["sae_source"],
            "sha256": sae["sae_sha256"],
            "n_latents": n_latents,
            "k": sae["sae_k"],
            "activation": sae["sae_activation"],
        },
        "data": {
            "name": data.source.name,
            "n_tokens": int(state.results["export/n_tokens"]),
            "n_ctx": data.n_ctx,
            "first_position_excluded": data.exclude_first,
        },
        "seed": run.seed,
        "settings": {
            "n_top": settings.n_top,
            "n_intervals": settings.n_intervals,
            "per_interval": settings.per_interval,
            "n_random": settings.n_random,
            "reservoir": settings.reservoir_size,
            "intervals": "quantile",
            "window": list(settings.window),
            "n_logits": settings.n_logits,
            "n_neighbours": settings.n_neighbours,
            "hist_edges": "log10",
            "dedup": settings.dedup,
            "ablation": settings.ablation,
            "explain": explain,
        },
        "n_latents": n_latents,
        "bytes_per_latent": round(total_bytes / n_latents, 1),
        "files": files,
    }
