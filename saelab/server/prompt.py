"""The prompt view's engine: text -> tokens -> the model up to the hook -> the SAE -> per
token, the latents that fire. Built from the same config and helpers as `saelab eval`, so
`saelab view DIR experiment=tiny` reads exactly the activations the export read."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import torch

from saelab.evals.evaluator import BatchEvaluator, Probe, probe
from saelab.sae.checkpoints import LoadedSAE
from saelab.sources.models import ModelSource

TOP_PER_TOKEN = 12


@cache
def unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-level alphabet: every byte is shown as one printable character
    (printable Latin-1 as itself, the other 68 bytes as U+0100 onwards)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(extra)})
    return table


def token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes]:
    """Each token's raw bytes, so characters split across tokens can be decoded in order."""
    table = unicode_to_byte()
    out = []
    for piece in tokenizer.convert_ids_to_tokens(ids):
        if all(ch in table for ch in piece):
            out.append(bytes(table[ch] for ch in piece))
        else:  # a special token such as <|endoftext|>
            out.append(piece.encode())
    return out


class PromptEngine:
    """Callable: `engine(text)` -> JSON-ready per-token latents."""

    def __init__(self, model: ModelSource, loaded: LoadedSAE, probe: Probe) -> None:
        self.model, self.loaded, self.hook = model, loaded, probe.hook
        self.forward = BatchEvaluator(model, [probe])  # stops after the probe's layer
        self.info = {
            "model": model.name,
            "hook": probe.hook,
            "sae": loaded.source,
            "sha256": loaded.sha256,
            "n_latents": loaded.sae.n_latents,
        }

    @torch.no_grad()
    def __call__(self, text: str) -> dict[str, Any]:
        tok = self.model.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"][: self.model.n_ctx - 1]
        ids = [tok.bos_token_id, *ids]  # as the data module packs contexts
        acts, _ = self.forward.clean_forward(torch.tensor([ids]))
        latents, _ = self.loaded.sae.encode(acts[self.hook][0].float())
        values, indices = latents.topk(min(TOP_PER_TOKEN, latents.shape[-1]), dim=-1)
        tokens = []
        for i, (raw, vals, idx) in enumerate(
            zip(token_bytes(tok, ids), values.tolist(), indices.tolist(), strict=True)
        ):
            fired = [[j, round(v, 4)] for v, j in zip(vals, idx, strict=True) if v > 0]
            tokens.append(
                {
                    "id": ids[i],
                    "bytes": base64.b64encode(raw).decode(),
                    "latents": fired,
                    "excluded": i == 0,  # the attention sink: excluded from exports and metrics
                }
            )
        return {**self.info, "tokens": tokens}


def build_engine(overrides: list[str]) -> PromptEngine:
    """Compose conf/eval.yaml with `overrides` and build the model and SAE like `saelab eval`."""
    from saelab.tasks.common import build, compose

    cfg = compose("eval", overrides)  # a wrong override: one line, exit 2
    loaded: LoadedSAE = build(cfg.sae)
    model: ModelSource = build(cfg.model)
    return PromptEngine(model, loaded, probe(model, cfg.location, cfg.layer, loaded.sae, {}))
