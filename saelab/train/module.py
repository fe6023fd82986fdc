"""The Lightning fit loop: SAEs at one or more hooks, trained on one shared activation stream.

Validation runs the evaluation plugins of `saelab eval` (the same `BatchEvaluator`) on
held-out token contexts.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import Tensor, nn

from saelab.data.tokens import distributed_rank
from saelab.errors import UserError
from saelab.evals import EvalPlugin
from saelab.evals.base import RunContext
from saelab.evals.density import wandb_histogram
from saelab.evals.evaluator import BatchEvaluator, Probe, compute_all, scalar_results
from saelab.sae.autoencoder import Autoencoder
from saelab.sources.models import ModelSource
from saelab.train.recipes import Recipe, record_firing

ADAM_EPS = 6.25e-10  # OpenAI's


class HookSAE(nn.Module):
    """One SAE in training: its run (the SAE, where it reads, the model and validation data),
    its loss scale, its validation plugins."""

    def __init__(
        self, run: RunContext, mse_scale: float, plugins: dict[str, EvalPlugin] | None = None
    ) -> None:
        super().__init__()
        self.run, self.hook, self.sae = run, run.hook, run.sae
        self.register_buffer("mse_scale", torch.tensor(mse_scale))
        self.plugins = nn.ModuleDict(plugins or {})
        for plugin in self.plugins.values():
            plugin.setup(run)


class SAETraining(L.LightningModule):
    """Trains one SAE per hook with `recipe`; batches are `{hook: activations}`."""

    def __init__(
        self,
        model: ModelSource | None,
        saes: list[HookSAE],
        recipe: Recipe,
        lr: float = 1e-4,
        warmup_steps: int = 100,
        decay_fraction: float = 0.2,
        total_steps: int = 1000,
        histogram_every_n_steps: int = 500,
        finite_check_every_n_steps: int = 100,
        checkpoint_every_n_steps: int = 0,
    ) -> None:
        super().__init__()
        self.model, self.recipe = model, recipe
        self.trained = nn.ModuleList(saes)
        self.by_hook = {t.hook: t for t in saes}
        probes = [  # validation needs the model; without one, training only
            Probe(t.run, t.plugins) for t in saes if model is not None and len(t.plugins)
        ]
        self.evaluator = BatchEvaluator(model, probes) if probes else None
        self.lr, self.warmup_steps, self.decay_fraction = lr, warmup_steps, decay_fraction
        self.total_steps, self.histogram_every_n_steps = total_steps, histogram_every_n_steps
        # the loss is checked every `finite_check_every_n_steps` and before every checkpoint
        self.finite_checks = [
            n for n in (finite_check_every_n_steps, checkpoint_every_n_steps) if n
        ]
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        # per hook, the first step whose loss was not finite (-1: none); read only at the
        # checks, so that other steps never wait for the device
        self.first_nonfinite = torch.full((len(saes),), -1, dtype=torch.long)
        self._step_started = time.perf_counter()

    def sae(self, hook: str) -> Autoencoder:
        return self.by_hook[hook].sae

    def setup(self, stage: str) -> None:
        if self.model is not None:
            self.model.to(self.device)
        self.first_nonfinite = self.first_nonfinite.to(self.device)

    @staticmethod
    def record_firing(sae: Autoencoder, fired_counts: Tensor, n_tokens: int) -> None:
        """Firing statistics of all ranks' batches (each rank reads its own contexts), so every
        rank keeps the same statistics and dead-latent masks; batches are equal in size."""
        _, world = distributed_rank()
        if world > 1:
            fired_counts = fired_counts.clone()
            torch.distributed.all_reduce(fired_counts)
        record_firing(sae, fired_counts, n_tokens * world)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        total = 0
        n_tokens = len(next(iter(batch.values())))
        logs: dict[str, Tensor | float] = {}
        for i, trained in enumerate(self.trained):
            hook, sae = trained.hook, trained.sae
            out = self.recipe.loss(sae, batch[hook], trained.mse_scale, self.record_firing)
            first = self.first_nonfinite[i]
            bad = ~torch.isfinite(out.loss) & (first < 0)
            self.first_nonfinite[i] = torch.where(bad, self.global_step, first)
            total = total + out.loss
            dead = sae.stats_last_nonzero > getattr(self.recipe, "dead_tokens", 10_000_000)
            prefix = f"train/{hook}/" if len(batch) > 1 else "train/"
            logs.update({prefix + k: v for k, v in out.logs.items()})
            logs[prefix + "loss"] = out.loss.detach()
            logs[prefix + "l0"] = out.fired_counts.sum() / n_tokens
            logs[prefix + "dead_fraction"] = dead.float().mean()
        done = self.global_step + 1
        if done >= self.total_steps or any(done % n == 0 for n in self.finite_checks):
            self.check_finite()  # before this step's checkpoint can be written
        self.tokens_seen += n_tokens * distributed_rank()[1]
        now = time.perf_counter()
        logs["tokens_per_s"] = n_tokens / max(now - self._step_started, 1e-9)
        self._step_started = now
        logs["tokens_seen"] = self.tokens_seen.float()
        logs["lr"] = self.optimizers().param_groups[0]["lr"]
        self.log_dict(logs, prog_bar=False)
        self.log("tok/s", logs["tokens_per_s"], prog_bar=True, logger=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        if self.histogram_every_n_steps and self.global_step % self.histogram_every_n_steps == 0:
            self.log_density_histograms()
        return total

    def check_finite(self) -> None:
        """Stop (before any checkpoint holds its weights) if a loss since the last check was
        not finite: the training step's one host sync, and only at the checks."""
        for trained, step in zip(self.trained, self.first_nonfinite.tolist(), strict=True):
            if step >= 0:
                raise UserError(
                    f"non-finite loss at step {step} for {trained.hook}; stopped. The last good "
                    "checkpoint is in the run's checkpoints/ folder (resume with "
                    "ckpt_path=...); try a lower train.lr"
                )

    def on_after_backward(self) -> None:
        for trained in self.trained:
            self.recipe.project_decoder_grad(trained.sae)

    def optimizer_step(self, *args, **kwargs) -> None:
        """Decoder rows are renormalised right after the update: in `on_train_batch_end` it
        ran after the checkpoint callback, so a checkpoint held un-normalised rows and a run
        resumed from it diverged from an uninterrupted one."""
        super().optimizer_step(*args, **kwargs)
        for trained in self.trained:
            self.recipe.normalize_decoder(trained.sae)

    def log_density_histograms(self) -> None:
        """Latents' log10 firing frequency from the running tokens-since-fired statistics."""
        from lightning.pytorch.loggers import WandbLogger

        if not isinstance(self.logger, WandbLogger):
            return
        for trained in self.trained:
            since = trained.sae.stats_last_nonzero.float().clamp_min(1)
            self.logger.experiment.log(
                {
                    f"train/{trained.hook}/log10_density_estimate": wandb_histogram(1 / since),
                    "trainer/global_step": self.global_step,
                }
            )

    # -- validation through the evaluation plugins -----------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.evaluator is not None:  # one forward for every hook's SAE
            self.evaluator(batch["tokens"], batch["mask"], positions=batch.get("positions"))

    def on_validation_epoch_end(self) -> None:
        self.validation_results = {}
        for probe in self.evaluator.probes if self.evaluator is not None else []:
            hook, results = probe.hook, compute_all(probe.plugins)
            for plugin in probe.plugins.values():
                plugin.reset()
            self.validation_results[hook] = results
            prefix = f"val/{hook}/" if len(self.trained) > 1 else "val/"
            self.log_dict({prefix + k: v for k, v in scalar_results(results).items()})

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.trained.parameters(), lr=self.lr, eps=ADAM_EPS)
        decay_steps = max(1, int(self.decay_fraction * self.total_steps))

        def schedule(step: int) -> float:
            warmup = min(1.0, (step + 1) / max(1, self.warmup_steps))
            decay = min(1.0, max(0.0, (self.total_steps - step) / decay_steps))
            return warmup * decay

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
