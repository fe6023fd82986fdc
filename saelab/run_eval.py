"""`saelab eval`: config -> model + SAE -> Lightning test loop -> results on disk and in loggers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from saelab import results as results_io
from saelab.checkpoints import LoadedSAE
from saelab.checks import check_eval
from saelab.errors import UserError
from saelab.evals import build_plugins
from saelab.evaluation import Evaluation, scalar_results
from saelab.models import ModelSource


def build(node: DictConfig, **kwargs: Any) -> Any:
    """`instantiate`, with the user's error (not Hydra's wrapper around it) surfacing."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        if error.__cause__ is None:  # the _target_ itself could not be found or called
            raise UserError(str(error).splitlines()[0]) from None
        raise


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    L.seed_everything(cfg.seed, verbose=False)
    check_eval(cfg)
    loaded: LoadedSAE = build(cfg.sae)  # before the model: family/location errors come first
    model: ModelSource = build(cfg.model)
    hook = model.hook_name(cfg.location, cfg.layer)
    width = model.width(cfg.location)
    if loaded.sae.n_inputs != width:
        raise UserError(
            f"the SAE reads {loaded.sae.n_inputs}-wide inputs but {hook} of {model.name} is "
            f"{width} wide: choose the SAE trained for this model and location"
        )
    data = build(cfg.data)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    module = Evaluation(model, loaded.sae, hook, cfg.layer, build_plugins(cfg.evals))

    logger = build(cfg.logger) if cfg.get("logger") else None
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = build(cfg.trainer, logger=logger or False)
    loop_started = time.perf_counter()
    trainer.test(module, datamodule=data, verbose=False)
    loop_seconds = time.perf_counter() - loop_started

    provenance = {
        "model": model.name,
        "hook": hook,
        "layer": cfg.layer,
        "location": cfg.location,
        **loaded.provenance(),
        "data": data.source.name,
        "n_tokens": data.n_evaluated_tokens,
        "first_position_excluded": data.exclude_first,
        "seconds": round(time.time() - started, 3),
        "seconds_test_loop": round(loop_seconds, 3),
        "seconds_by_part": {k: round(v, 3) for k, v in module.seconds.items()},
        "versions": results_io.versions(),
    }
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    if trainer.is_global_zero:
        written = results_io.save(out_dir, cfg, module.results, provenance, module.plugins)
        results_io.log_to(logger, module.results, provenance)
        results_io.close_loggers()  # W&B prints its summary on closing: the table comes last
        results_io.print_table(module.results, provenance, written)
    return scalar_results(module.results)
