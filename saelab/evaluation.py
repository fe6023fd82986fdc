"""The Lightning evaluation loop: one clean forward per batch, shared by every plugin.

The clean pass stops after the hooked layer unless a plugin needs logits. The SAE-spliced
and zero-ablated passes run only when a plugin asks for their logits; they are the only
extra forwards.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import Tensor, nn

from saelab.autoencoder import Autoencoder
from saelab.evals.base import ABLATED_LOGITS, LOGITS, SPLICED_LOGITS, EvalBatch, EvalPlugin
from saelab.models import ModelSource


class BatchEvaluator:
    """Runs one batch through the model and the SAE and hands the shared result to plugins.

    Used by `saelab eval` (below) and by validation during training: one code path.
    """

    def __init__(self, model: ModelSource, hook: str, layer: int, needs: frozenset[str]) -> None:
        self.source, self.hook, self.layer, self.needs = model, hook, layer, needs
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def timed(self, part: str, device: torch.device) -> Iterator[None]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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

    @torch.no_grad()
    def __call__(
        self, sae: Autoencoder, plugins: Iterable[EvalPlugin], tokens: Tensor, mask: Tensor
    ) -> None:
        device = tokens.device
        with self.timed("model_forward", device):
            acts, logits = self.clean_forward(tokens)
        with self.timed("sae", device):
            x = acts[mask].float()
            if sae.k is None:
                latents, info = sae.encode(x)
                recons = sae.decode(latents, info)
            else:
                latents, info = sae.encode_sparse(x)
                recons = sae.decode_sparse(latents, info)
        view = EvalBatch(tokens, mask, x, recons, latents, logits)
        with self.timed("model_forward", device):
            if SPLICED_LOGITS in self.needs:
                view.spliced_logits = self.patched_logits(tokens, mask, recons)
            if ABLATED_LOGITS in self.needs:
                view.ablated_logits = self.patched_logits(tokens, mask, torch.zeros_like(recons))
        with self.timed("plugins", device):
            for plugin in plugins:
                plugin.update(view)


def compute_all(plugins: Iterable[EvalPlugin]) -> dict[str, float | Tensor]:
    results: dict[str, float | Tensor] = {}
    for plugin in plugins:
        results.update(plugin.compute())
    return results


def scalar_results(results: dict[str, float | Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in results.items() if not isinstance(v, Tensor)}


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
        for plugin in plugins.values():
            plugin.setup(sae)
        self.plugins = nn.ModuleDict(plugins)
        needs = frozenset().union(*(p.needs for p in plugins.values()))
        self.evaluator = BatchEvaluator(model, hook, layer, needs)
        self.results: dict[str, float | Tensor] = {}
        self.local_tokens: Tensor | int = 0  # evaluated positions on this rank
        self.n_tokens = 0  # ... and over all ranks

    @property
    def seconds(self) -> dict[str, float]:
        return self.evaluator.seconds

    def on_test_start(self) -> None:
        self.source.to(self.device)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.evaluator(self.sae, self.plugins.values(), batch["tokens"], batch["mask"])
        self.local_tokens = self.local_tokens + batch["mask"].sum()  # no host sync per step

    def on_test_epoch_end(self) -> None:
        local = torch.as_tensor(self.local_tokens, device=self.device)
        self.n_tokens = int(self.trainer.strategy.reduce(local, reduce_op="sum"))
        self.results = compute_all(self.plugins.values())
        # plugin states are already reduced across ranks by torchmetrics
        self.log_dict(scalar_results(self.results), sync_dist=False)
