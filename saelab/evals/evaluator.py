"""The Lightning evaluation loop: one clean forward per batch, shared by every SAE and plugin.

Per batch: one clean forward captures every hooked activation (and the residual stream
entering each block an SAE is spliced into) and stops after the deepest hooked layer unless
a plugin needs the model's output. Then, for each SAE in hook order: encode and sparse
decode; and only for plugins that need them, the SAE-spliced forward and the zero-ablated
forward (once per hook, shared by the SAEs there), both started at the hooked block from the
cached residual stream. Each set of logits goes through log-softmax once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor, nn

from saelab.errors import UserError
from saelab.evals.base import (
    ABLATED_LOG_PROBS,
    LOG_PROBS,
    SPLICED_LOG_PROBS,
    EvalBatch,
    EvalPlugin,
    RunContext,
)
from saelab.sae.autoencoder import Autoencoder, SparseLatents
from saelab.sources.models import ModelSource

REPLACED = frozenset({SPLICED_LOG_PROBS, ABLATED_LOG_PROBS})


@dataclass
class Probe:
    """One SAE read at one place of the model (its run), and the plugins that evaluate it.
    `wants`: what its caller reads of the forwards besides what the plugins need."""

    run: RunContext
    plugins: Mapping[str, EvalPlugin]
    wants: frozenset[str] = frozenset()

    @property
    def hook(self) -> str:
        return self.run.hook

    @property
    def layer(self) -> int:
        return self.run.place.layer

    @property
    def sae(self) -> Autoencoder:
        return self.run.sae

    @property
    def needs(self) -> frozenset[str]:
        return self.wants.union(*(plugin.needs for plugin in self.plugins.values()))


def probe(run: RunContext, plugins: Mapping[str, EvalPlugin]) -> Probe:
    """The probe of the run's SAE, checked to read its hook's width."""
    sae, model = run.sae, run.model
    width = model.width(run.hook)
    if sae.n_inputs != width:
        raise UserError(
            f"the SAE reads {sae.n_inputs}-wide inputs but {run.hook} of {model.name} is "
            f"{width} wide: choose the SAE trained for this model and location"
        )
    return Probe(run, plugins)


class Timer:
    """Seconds by part. On CUDA, events are recorded without waiting for the GPU; they are
    read (one synchronisation) only when the totals are asked for."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = defaultdict(list)

    @contextmanager
    def __call__(self, part: str, device: torch.device) -> Iterator[None]:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events[part].append((start, end))
        else:
            started = time.perf_counter()
            yield
            self.cpu[part] += time.perf_counter() - started

    @property
    def seconds(self) -> dict[str, float]:
        totals = dict(self.cpu)
        if self.events:
            torch.cuda.synchronize()
        for part, pairs in self.events.items():
            totals[part] = totals.get(part, 0.0) + sum(s.elapsed_time(e) for s, e in pairs) / 1e3
        return totals


def encode_decode(sae: Autoencoder, x: Tensor) -> tuple[SparseLatents | Tensor, Tensor]:
    """Latents and reconstruction; TopK SAEs stay sparse (k latents per row) throughout."""
    if sae.k is None:
        latents, info = sae.encode(x)
        return latents, sae.decode(latents, info)
    latents, info = sae.encode_sparse(x)
    return latents, sae.decode_sparse(latents, info)


class BatchEvaluator:
    """Runs each batch through the model once and through every probe's SAE and plugins.

    Used by `saelab eval` (one probe), `saelab sweep` (many) and validation during training
    (one per hook): one code path.
    """

    def __init__(self, model: ModelSource, probes: Sequence[Probe]) -> None:
        self.model = model
        self.probes = sorted(probes, key=lambda probe: probe.hook)  # ablations shared per hook
        needs = frozenset().union(*(probe.needs for probe in probes))
        self.needs_output = bool(needs & {LOG_PROBS, *REPLACED})
        self.captured = {probe.hook for probe in probes} | {
            model.resid_pre(probe.layer) for probe in probes if probe.needs & REPLACED
        }
        self.stop_at_layer = None if self.needs_output else max(p.layer for p in probes) + 1
        self.timer = Timer()

    def clean_forward(self, tokens: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        """Activations at every captured hook, and log-probabilities if a plugin needs them."""
        acts, out = self.model.capture(tokens, self.captured, self.stop_at_layer)
        return acts, (out.float().log_softmax(-1) if out is not None else None)

    def replaced(
        self, probe: Probe, acts: dict[str, Tensor], positions: Tensor, value: Tensor
    ) -> Tensor:
        """Log-probabilities with `value` at the probe's hook at `positions` (flat indices into
        batch x context), from its block on."""
        hooks = self.model.replace_hooks(probe.hook, positions, value)
        resid_pre = acts[self.model.resid_pre(probe.layer)]
        return self.model.forward_from(probe.layer, resid_pre, hooks).float().log_softmax(-1)

    @torch.no_grad()
    def __call__(
        self,
        tokens: Tensor,
        mask: Tensor,
        context: Tensor | None = None,
        document: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> None:
        """`positions`: `mask`'s true positions as flat indices (the data module's collate
        computes them on the host, so that no SAE's gather waits for the GPU)."""
        device = tokens.device
        if positions is None:
            positions = mask.flatten().nonzero().squeeze(1)
        with self.timer("model_forward", device):
            acts, log_probs = self.clean_forward(tokens)
        ablated: tuple[str, Tensor] | None = None  # the current hook's, freed at the next hook
        shared: dict[str, Tensor] = {}  # what plugins of every SAE read (EvalBatch.clean_probs)
        inputs: tuple[str, Tensor] | None = None  # the current hook's evaluated rows
        for probe in self.probes:
            with self.timer("sae", device):
                if inputs is None or inputs[0] != probe.hook:
                    inputs = (probe.hook, acts[probe.hook].flatten(0, 1)[positions].float())
                x = inputs[1]
                latents, recons = encode_decode(probe.sae, x)
            batch = EvalBatch(tokens, mask, x, recons, latents, log_probs, shared=shared,
                              positions=positions)  # fmt: skip
            batch.context, batch.document = context, document
            with self.timer("model_forward", device):
                if SPLICED_LOG_PROBS in probe.needs:
                    batch.spliced_log_probs = self.replaced(probe, acts, positions, recons)
                if ABLATED_LOG_PROBS in probe.needs:
                    if ablated is None or ablated[0] != probe.hook:
                        ablated = None  # free the last hook's before computing this one
                        zeros = torch.zeros_like(recons)
                        ablated = (probe.hook, self.replaced(probe, acts, positions, zeros))
                    batch.ablated_log_probs = ablated[1]
            with self.timer("plugins", device):
                for plugin in probe.plugins.values():
                    plugin.update(batch)


def compute_all(plugins: Mapping[str, EvalPlugin]) -> dict[str, float | Tensor]:
    results: dict[str, float | Tensor] = {}
    for plugin in plugins.values():
        results.update(plugin.compute())
    return results


def scalar_results(results: dict[str, float | Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in results.items() if not isinstance(v, Tensor)}


class TokenRate(L.Callback):
    """Tokens/s on the test loop's progress bar, from the batches' shapes: read on the host,
    so showing it never waits for the device."""

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self.started, self.tokens = time.perf_counter(), 0

    def on_test_batch_end(
        self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.tokens += batch["tokens"].numel()
        label = f"{self.tokens / (time.perf_counter() - self.started):,.0f} tokens/s"
        bar = trainer.progress_bar_callback  # its own update, right after this, draws the label
        if getattr(bar, "test_progress_bar_id", None) is not None:  # RichProgressBar
            bar.progress.update(bar.test_progress_bar_id, description=f"Testing {label}")
        elif getattr(bar, "test_progress_bar", None) is not None:  # TQDMProgressBar
            bar.test_progress_bar.set_postfix_str(label, refresh=False)


class Evaluation(L.LightningModule):
    """Evaluates SAEs at hook points of a model with their plugins (`trainer.test`).

    `results[i]` holds the computed plugin results of `probes[i]`.
    """

    def __init__(self, model: ModelSource, probes: Sequence[Probe]) -> None:
        super().__init__()
        self.model = model  # not an nn.Module: moved to the device in `on_test_start`
        for probe in probes:
            probe.sae.eval().requires_grad_(False)
            for plugin in probe.plugins.values():
                plugin.setup(probe.run)
        self.probes = list(probes)
        # registered as submodules so that Lightning moves them to the device
        self.saes = nn.ModuleList(probe.sae for probe in probes)
        self.plugins = nn.ModuleList(nn.ModuleDict(probe.plugins) for probe in probes)
        self.evaluator = BatchEvaluator(model, self.probes)
        self.results: list[dict[str, float | Tensor]] = []
        self.local_tokens: Tensor | int = 0  # evaluated positions on this rank
        self.n_tokens = 0  # ... and over all ranks

    @property
    def seconds(self) -> dict[str, float]:
        return self.evaluator.timer.seconds

    def on_test_start(self) -> None:
        self.model.to(self.device)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.evaluator(
            batch["tokens"], batch["mask"], batch.get("context"), batch.get("document"),
            batch.get("positions"),
        )  # fmt: skip
        self.local_tokens = self.local_tokens + batch["mask"].sum()  # no host sync per step

    def on_test_epoch_end(self) -> None:
        local = torch.as_tensor(self.local_tokens, device=self.device)
        self.n_tokens = int(self.trainer.strategy.reduce(local, reduce_op="sum"))
        self.results = [compute_all(probe.plugins) for probe in self.probes]
        if len(self.probes) == 1:  # plugin states are already reduced across ranks
            self.log_dict(scalar_results(self.results[0]), sync_dist=False)
