"""OpenAI's `sae-viewer` files: `FeatureInfo` / `SequenceInfo` JSON, field names as in their
`sae-viewer/src/types.ts`, so their page renders saelab's exports."""

from __future__ import annotations

from typing import Any

import numpy as np

OPENAI_BIN_WIDTH = 0.2  # their page draws bin i at [0.2 i, 0.2 (i + 1)), hard-coded


def openai_hist(edges: np.ndarray, counts: np.ndarray) -> dict[str, int]:
    """`{binIndex: count}` in their fixed-width bins, rebinned from the log-spaced histogram
    by each log bin's geometric centre (their format cannot carry edges)."""
    centres = np.sqrt(edges[:-1] * edges[1:])
    index = np.floor(centres / OPENAI_BIN_WIDTH).astype(np.int64)
    out: dict[str, int] = {}
    for i, count in zip(index[counts > 0], counts[counts > 0], strict=True):
        out[str(int(i))] = out.get(str(int(i)), 0) + int(count)
    return out


def sequence_info(example: dict[str, Any], strings: list[str], density: float) -> dict[str, Any]:
    """Their effect arrays are shifted by one (token i reads index i - 1); saelab's are not."""
    info = {
        "density": density,
        "doc_id": example["doc"],
        "idx": example["idx"],
        "acts": example["acts"],
        "act": example["act"],
        "tokens": [strings[t] for t in example["tokens"]],
        "token_ints": example["tokens"],
    }
    for ours, theirs in (("loss_diff", "ablate_loss_diff"), ("kl", "kl")):
        if ours in example:
            info[theirs] = [*example[ours][1:], 0.0]
    return info


def feature_info(record: dict[str, Any], strings: list[str]) -> dict[str, Any]:
    edges = np.asarray(record["hist"]["edges"])
    counts = np.asarray(record["hist"]["counts"], dtype=np.int64)
    density = record["density"]
    return {
        "density": density,
        "mean_act": record["mean_act"],
        "mean_act_squared": record["mean_act_squared"],
        "skew": record["skew"],
        "kurtosis": record["kurtosis"],
        "hist": openai_hist(edges, counts) if len(counts) else {},
        "top": [sequence_info(e, strings, density) for e in record["top"]],
        "random": [sequence_info(e, strings, density) for e in record["random"]],
    }
