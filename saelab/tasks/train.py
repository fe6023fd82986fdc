"""`saelab train`: config -> model + tokens -> activation stream -> Lightning fit -> SAE files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from saelab.config import build
from saelab.data.activations import MANIFEST, BufferedStream, CachedActivations, ModelActivations
from saelab.data.tokens import TokenDataModule
from saelab.errors import UserError
from saelab.evals import build_plugins
from saelab.evals import results as results_io
from saelab.evals.base import RunContext
from saelab.evals.evaluator import scalar_results
from saelab.formats import save_sae
from saelab.io import write_json
from saelab.sources.models import ModelSource
from saelab.sources.places import Place, check_layers, select
from saelab.tasks.checks import check_fits, check_train
from saelab.tasks.common import logger as task_logger
from saelab.tasks.common import model_source, output_dir
from saelab.train.loop import AtomicCheckpointIO, TrainData, resume_from
from saelab.train.module import HookSAE, SAETraining
from saelab.train.recipes import Recipe


def places_for(cfg: DictConfig, model: ModelSource) -> list[Place]:
    """Every place of `layer` x `location` (each one value, a list or `all`)."""
    check_layers(cfg.layer, model)
    return select(cfg.layer, cfg.location, model.places(), default=None, what=model.name)


def cached(
    stream: ModelActivations, directory: Path, cfg: DictConfig, model: ModelSource
) -> CachedActivations:
    """Write the activation cache once (if it is not complete yet), then read from it: a
    cache written for another model, data, context length or seed is refused."""
    origin = {
        "model": model.name,
        "precision": model.precision.name,
        "data": OmegaConf.to_container(cfg.data.source, resolve=True),
    }
    if not (directory / MANIFEST).is_file():
        dtype = cfg.train.activation_cache_dtype
        size = stream.cache_bytes(dtype) / 1e9
        print(
            f"writing an activation cache of {size:.2f} GB ({stream.n_contexts} contexts, "
            f"{len(stream.hooks)} hooks, {dtype}) to {directory}"
        )
        stream.write_cache(directory, origin, dtype=dtype)
    return CachedActivations(directory, stream, origin)


def activations_and_validation(
    cfg: DictConfig, model: ModelSource, hooks: dict[str, int]
) -> tuple[BufferedStream, TokenDataModule]:
    """One token pool: its first contexts are held out for validation, the rest feed training."""
    data: TokenDataModule = build(cfg.data)
    n_val = cfg.train.val_tokens if cfg.train.val_every_n_steps else 0
    data.prepare(
        model.tokenizer, model.vocab_size, model.n_ctx, n_tokens=cfg.train.n_tokens + n_val
    )
    n_val_contexts = max(n_val // data.n_ctx, data.batch_size) if n_val else 0
    val = TokenDataModule(
        data.source,
        n_val_contexts * data.n_ctx,
        data.n_ctx,
        data.batch_size,
        data.prepend_bos,
        data.exclude_first,
        data.seed,
    )
    val.tokens = data.tokens[:n_val_contexts]
    stream = ModelActivations(
        model,
        hooks,
        data.tokens[n_val_contexts:],
        cfg.train.batch_size,
        cfg.train.buffer_contexts,
        data.batch_size,
        data.exclude_first,
        cfg.seed,
    )
    if cfg.train.activation_cache:
        return cached(stream, Path(cfg.train.activation_cache), cfg, model), val
    return stream, val


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    check_train(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    model = model_source(cfg)
    places = places_for(cfg, model)
    hooks = {place.hook: place.layer for place in places}
    # each SAE's two [n_latents, width] matrices in fp32, with their gradients and Adam's two
    widths = sum(model.width(hook) for hook in hooks)
    n_latents = cfg.recipe.n_latents
    check_fits(n_latents * widths * 2 * 4 * 4, f"recipe.n_latents={n_latents}")
    recipe: Recipe = build(cfg.recipe)
    out_dir = output_dir(cfg)

    stream, val = activations_and_validation(cfg, model, hooks)  # data errors before the loop
    ckpt_path = resume_from(out_dir / "checkpoints", cfg.get("ckpt_path"), cfg.get("resume"))
    trainer = fit_trainer(cfg, out_dir / "checkpoints")
    # every rank initialises from the same (unsharded) sample, then reads its own contexts
    sample = {hook: acts[: cfg.train.init_tokens] for hook, acts in stream.buffer(0).items()}
    stream.shard(trainer.global_rank, trainer.world_size)
    total_steps = len(stream)
    if total_steps < 1:
        raise UserError(
            f"train.n_tokens={cfg.train.n_tokens} is less than one batch "
            f"(train.batch_size={cfg.train.batch_size} tokens)"
        )
    trainer.fit_loop.epoch_loop.max_steps = total_steps

    # initialise each SAE on a sample of its activations (OpenAI's init needs the data)
    saes = []
    for i, place in enumerate(places):
        sae, mse_scale = recipe.build(model.width(place.hook), sample[place.hook], cfg.seed + i)
        run = RunContext.of_sae(sae, model, place, val, cfg.seed)
        saes.append(HookSAE(run, mse_scale, plugins=build_plugins(cfg.evals)))
    module = SAETraining(
        model,
        saes,
        recipe,
        lr=cfg.train.lr,
        warmup_steps=cfg.train.warmup_steps,
        decay_fraction=cfg.train.decay_fraction,
        total_steps=total_steps,
        histogram_every_n_steps=cfg.train.histogram_every_n_steps,
        checkpoint_every_n_steps=cfg.train.checkpoint_every_n_steps,
    )
    trainer.fit(module, datamodule=TrainData(stream, val), ckpt_path=ckpt_path)
    return save_saes(cfg, places, trainer, module, TrainData(stream, val), started)


def fit_trainer(cfg: DictConfig, checkpoints: Path) -> L.Trainer:
    """The configured trainer with periodic atomic checkpoints, optional EMA and validation;
    `max_steps` is set once the stream is sharded over its ranks."""
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            save_last=True,
            save_top_k=1,
            every_n_train_steps=cfg.train.checkpoint_every_n_steps,
        )
    ]
    if cfg.train.ema_decay:
        callbacks.append(EMAWeightAveraging(decay=cfg.train.ema_decay))
    return build(
        cfg.trainer,
        logger=task_logger(cfg) or False,
        callbacks=callbacks,
        max_steps=-1,
        max_epochs=1,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=True,
        val_check_interval=cfg.train.val_every_n_steps or None,
        limit_val_batches=1.0 if cfg.train.val_every_n_steps else 0,
    )


def save_saes(
    cfg: DictConfig,
    places: list[Place],
    trainer: L.Trainer,
    module: SAETraining,
    data: TrainData,
    started: float,
) -> dict[str, Any]:
    """Validate the SAEs as saved (EMA weights if enabled) on held-out tokens, then write each
    in saelab's format with its provenance, and `train.json`."""
    recipe, out_dir = module.recipe, output_dir(cfg)
    provenance = {
        "model": module.model.name,
        "recipe": recipe.name,
        "n_latents": recipe.n_latents,
        "k": recipe.k,
        "normalize": recipe.normalize,
        "n_tokens": int(module.tokens_seen),
        "steps": trainer.global_step,
        "seconds": round(time.time() - started, 3),
        "versions": results_io.versions(),
    }
    final_metrics = {}
    if len(data.val.tokens):
        trainer.validate(module, datamodule=data, verbose=False)
        final_metrics = {h: scalar_results(r) for h, r in module.validation_results.items()}
    saes = {}
    if trainer.is_global_zero:
        for place in places:
            hook = place.hook
            meta = {**provenance, "hook": hook, "layer": place.layer, "location": place.location}
            written = save_sae(module.sae(hook).cpu(), out_dir / "saes" / hook, meta)
            saes[hook] = {
                "files": [str(p) for p in written],
                "validation": final_metrics.get(hook, {}),
            }
        write_json(out_dir / "train.json", {"provenance": provenance, "saes": saes})
        print(
            f"\ntrained {len(places)} SAE(s) on {provenance['n_tokens']} tokens "
            f"in {provenance['seconds']:.0f} s"
        )
        for hook, info in saes.items():
            print(f"  {hook}: {Path(info['files'][0]).parent}")
    return provenance
