"""Small, valid viewer inputs written by hand: a saelab export with adversarial tokens
(`<script>`, a euro sign split across two tokens, newlines) and a directory of OpenAI's
FeatureInfo files. Built from the format in docs/export-format.md, not from the exporter."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import numpy as np

SCRIPT = b"<script>alert(1)</script>"
IMG = b"<img src=x onerror=alert(2)>"
EURO_HEAD, EURO_TAIL = "€".encode()[:2], "€".encode()[2:] + b"!"
SPECIAL = [SCRIPT, IMG, EURO_HEAD, EURO_TAIL, b"\n", b" the", " wörld".encode()]
SCRIPT_ID, IMG_ID, EURO_HEAD_ID, EURO_TAIL_ID, NEWLINE_ID, THE_ID, WORLD_ID = range(256, 263)
N_LATENTS = 12


def vocabulary() -> list[bytes]:
    return [bytes([b]) for b in range(256)] + SPECIAL


def example(tokens: list[int], idx: int, act: float, doc: int) -> dict:
    acts = [0.0] * len(tokens)
    acts[idx] = act
    if idx > 0:
        acts[idx - 1] = round(act / 3, 3)
    return {
        "doc": doc,
        "ctx": doc,
        "pos": idx + 1,
        "idx": idx,
        "act": act,
        "tokens": tokens,
        "acts": acts,
    }


def record(latent: int, rng: np.random.Generator) -> dict:
    """Latent 0 fires on `<script>`, latent 1 on the euro sign's last token, the rest on ' the'."""
    target = {0: SCRIPT_ID, 1: EURO_TAIL_ID}.get(latent, THE_ID)
    words = [ord(c) for c in "abc"]
    window = [*words, NEWLINE_ID, IMG_ID, EURO_HEAD_ID, EURO_TAIL_ID, WORLD_ID, target, *words]
    idx = window.index(target) if target != EURO_TAIL_ID else window.index(EURO_TAIL_ID)
    top = [example(window, idx, round(5.0 - 0.2 * i, 3), i) for i in range(6)]
    edges = np.geomspace(0.01, 10, 21).round(5).tolist()  # log-spaced, as the export
    counts = rng.integers(0, 400, len(edges) - 1).tolist()
    return {
        "id": latent,
        "density": 0.01 * (latent + 1),
        "mean_act": 1.5,
        "mean_act_squared": 3.0,
        "skew": 0.7,
        "kurtosis": 4.1,
        "max_act": 5.0,
        "hist": {"edges": edges, "counts": counts},
        "logits": {"top": [[SCRIPT_ID, 2.5], [THE_ID, 1.2]], "bottom": [[NEWLINE_ID, -1.5]]},
        "neighbours": [[(latent + 1) % N_LATENTS, 0.61], [(latent + 2) % N_LATENTS, 0.4]],
        "top": top,
        "intervals": {
            "kind": "quantile",
            "bins": [
                {"lo": 1.0, "hi": 1.0, "examples": [example(window, idx, 1.0, 7)]},
                {"lo": 3.0, "hi": 3.0, "examples": [example(window, idx, 3.0, 8)]},
            ],
        },
        "random": [example(window, idx, 2.0, 9)],
    }


def write_export(root: Path) -> Path:
    """An export of N_LATENTS latents; latent N_LATENTS-1 is dead, latent 0 dense."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (root / "vocab.json").write_text(
        json.dumps(
            {
                "bytes": [base64.b64encode(b).decode() for b in vocab],
                "strings": [b.decode(errors="replace") for b in vocab],
            }
        )
    )
    (root / "latents").mkdir(exist_ok=True)
    density = [0.2, *[0.005 * (i + 1) for i in range(1, N_LATENTS - 1)], 0.0]
    for latent in range(N_LATENTS):
        data = json.dumps(record(latent, rng)).encode()
        (root / "latents" / f"{latent}.json.gz").write_bytes(gzip.compress(data))
    (root / "latents.json").write_text(
        json.dumps(
            {
                "density": density,
                "mean_act": [1.5 - 0.1 * i for i in range(N_LATENTS)],
                "max_act": [5.0] * N_LATENTS,
                "top_token": [SCRIPT_ID, EURO_TAIL_ID, *[THE_ID] * (N_LATENTS - 2)],
            }
        )
    )
    (root / "search.json").write_text(
        json.dumps(
            {
                str(SCRIPT_ID): [[0, 5.0]],
                str(EURO_TAIL_ID): [[1, 5.0]],
                str(THE_ID): [[i, 5.0 - 0.1 * i] for i in range(2, N_LATENTS - 1)],
            }
        )
    )
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "schema": "saelab-export/1",
                "created": "2025-01-01T00:00:00Z",
                "model": "handmade",
                "hook": "blocks.0.hook_resid_post",
                "layer": 0,
                "location": "resid_post_mlp",
                "sae": {
                    "source": "handmade.pt",
                    "sha256": "0" * 64,
                    "n_latents": N_LATENTS,
                    "k": 4,
                    "activation": "TopK",
                },
                "data": {
                    "name": "handmade",
                    "n_tokens": 1000,
                    "n_ctx": 16,
                    "first_position_excluded": True,
                },
                "seed": 0,
                "n_latents": N_LATENTS,
                "settings": {
                    "n_top": 6,
                    "n_intervals": 2,
                    "per_interval": 1,
                    "n_random": 1,
                    "intervals": "quantile",
                    "window": [8, 4],
                },
            }
        )
    )
    return root


def write_openai_dir(root: Path) -> Path:
    """Two FeatureInfo files, field names as in OpenAI's sae-viewer/src/types.ts."""
    root.mkdir(parents=True, exist_ok=True)
    for atom in (3, 17):
        seq = {
            "density": 0.01,
            "doc_id": 42,
            "idx": 2,
            "act": 4.25,
            "tokens": ["The", " quick", " fox", "\n", " jumps"],
            "token_ints": [1, 2, 3, 4, 5],
            "acts": [0.0, 1.0, 4.25, 0.0, 0.5],
            "normalized_acts": None,
        }
        if atom == 17:  # ablation effects in their convention: index i - 1 is token i
            seq = {**seq, "ablate_loss_diff": [0, 0, 0.5, -0.25, 0], "kl": [0, 0, 0.1, 0.2, 0]}
        info = {
            "density": 0.0123,
            "mean_act": 1.7,
            "mean_act_squared": 3.9,
            "skew": 1.1,
            "kurtosis": 5.0,
            "hist": {"0": 10, "3": 250, "7": 31, "21": 2},
            "top": [seq, {**seq, "act": 3.5, "doc_id": 43}],
            "random": [seq],
        }
        (root / f"{atom}.json").write_text(json.dumps(info))
    return root
