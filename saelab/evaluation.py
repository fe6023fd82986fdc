"""The Lightning evaluation loop: one clean forward per batch, shared by every plugin.

The clean pass stops after the hooked layer unless a plugin needs logits. The SAE-spliced
and zero-ablated passes run only when a plugin asks for their logits; they are the only
extra forwards.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import Tensor, nn

from saelab.autoencoder import Autoencoder
from saelab.evals.base import ABLATED_LOGITS, LOGITS, SPLICED_LOGITS, EvalBatch, EvalPlugin
from saelab.models import ModelSource


class Evaluation(L.LightningModule):
    """Evaluates one SAE at one hook point of a model with a set of plugins (`trainer.test`)."""

    def __init__(
        self,
        model: ModelSource,
        sae: Autoencoder,
        hook: str,
        layer: int,
        plugins: dict[str, EvalPlugin],
    ) -> None:
        super().__init__()
        self.source = model  # not an nn.Module: moved to the device in `on_test_start`
        self.sae = sae.eval().requires_grad_(False)
        self.hook, self.layer = hook, layer
        for plugin in plugins.values():
            plugin.setup(sae)
        self.plugins = nn.ModuleDict(plugins)
        self.needs = frozenset().union(*(p.needs for p in plugins.values()))
        self.seconds: dict[str, float] = defaultdict(float)
        self.results: dict[str, float | Tensor] = {}

    def on_test_start(self) -> None:
        self.source.to(self.device)

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[part] += time.perf_counter() - start

    def clean_forward(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """Activations at the hook, and logits if any plugin needs them."""
        captured: list[Tensor] = []

        def capture(act: Tensor, hook) -> Tensor:
            captured.append(act)
            return act

        need_logits = bool(self.needs & {LOGITS, SPLICED_LOGITS, ABLATED_LOGITS})
        out = self.source.bridge.run_with_hooks(
            tokens,
            fwd_hooks=[(self.hook, capture)],
            stop_at_layer=None if need_logits else self.layer + 1,
        )
        return captured[0], (out if need_logits else None)

    def patched_logits(self, tokens: Tensor, mask: Tensor, replacement: Tensor) -> Tensor:
        """Logits with the hook's activations at `mask` positions replaced."""

        def patch(act: Tensor, hook) -> Tensor:
            act = act.clone()
            act[mask] = replacement.to(act.dtype)
            return act

        return self.source.bridge.run_with_hooks(tokens, fwd_hooks=[(self.hook, patch)])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        tokens, mask = batch["tokens"], batch["mask"]
        with self.timed("model_forward"):
            acts, logits = self.clean_forward(tokens)
        with self.timed("sae"):
            x = acts[mask].float()
            if self.sae.k is None:
                latents, info = self.sae.encode(x)
                recons = self.sae.decode(latents, info)
            else:
                latents, info = self.sae.encode_sparse(x)
                recons = self.sae.decode_sparse(latents, info)
        view = EvalBatch(tokens, mask, x, recons, latents, logits)
        with self.timed("model_forward"):
            if SPLICED_LOGITS in self.needs:
                view.spliced_logits = self.patched_logits(tokens, mask, recons)
            if ABLATED_LOGITS in self.needs:
                view.ablated_logits = self.patched_logits(tokens, mask, torch.zeros_like(recons))
        with self.timed("plugins"):
            for plugin in self.plugins.values():
                plugin.update(view)

    def on_test_epoch_end(self) -> None:
        results: dict[str, float | Tensor] = {}
        for plugin in self.plugins.values():
            results.update(plugin.compute())
        self.results = results
        scalars = {k: float(v) for k, v in results.items() if not isinstance(v, Tensor)}
        self.log_dict(scalars, sync_dist=False)  # plugin states are already reduced
