"""The prompt view's engine: text -> tokens -> the model up to the hook -> the SAE -> per
token, the latents that fire. Its model and SAE are composed and placed exactly as `saelab
eval` places them (`saelab.sae.checkpoints.locate`: the hook a checkpoint records, the model
it names), so the view reads the activations an eval or export of the same overrides read."""

from __future__ import annotations

import base64
from typing import Any

import torch

from saelab.config import build, compose
from saelab.evals.base import RunContext
from saelab.evals.evaluator import probe
from saelab.export.vocab import token_bytes
from saelab.sae.checkpoints import locate

TOP_PER_TOKEN = 12


class PromptEngine:
    """Callable: `engine(text)` -> JSON-ready per-token latents."""

    def __init__(self, run: RunContext) -> None:
        self.run = probe(run, {}).run  # checked: the SAE reads the hook's width
        self.info = {
            "model": run.model.name,
            "hook": run.hook,
            "sae": run.checkpoint.source,
            "sha256": run.checkpoint.sha256,
            "n_latents": run.sae.n_latents,
        }

    @torch.no_grad()
    def __call__(self, text: str) -> dict[str, Any]:
        model, sae = self.run.model, self.run.sae
        tok = model.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"][: model.n_ctx - 1]
        ids = [tok.bos_token_id, *ids]  # as the data module packs contexts
        acts = self.run.activations(torch.tensor([ids]))[0].float()
        latents, _ = sae.encode(acts)
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
    """Compose conf/eval.yaml with `overrides`; build and place the model and SAE as `saelab
    eval` does."""
    cfg = compose("eval", overrides)  # a wrong override: one line, exit 2
    source = build(cfg.sae)
    model = build(cfg.model)
    place, checkpoint = locate(source, model, cfg.layer, cfg.location)
    return PromptEngine(RunContext(model, place, checkpoint, seed=cfg.seed))
