"""`saelab eval`: config -> model + SAE -> Lightning test loop -> results on disk and in loggers."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from saelab.config import build
from saelab.errors import UserError
from saelab.evals import build_plugins
from saelab.evals import results as results_io
from saelab.evals.base import EvalPlugin, RunContext
from saelab.evals.evaluator import Evaluation, TokenRate, probe, scalar_results
from saelab.export import Export
from saelab.sae.checkpoints import locate
from saelab.tasks.checks import check_eval
from saelab.tasks.common import close_loggers, model_source, output_dir
from saelab.tasks.common import logger as task_logger


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    out_dir = output_dir(cfg)
    if cfg.resume and (done := results_io.completed(out_dir)) is not None:
        print(f"resume: {out_dir} is complete, skipped")
        return done
    check_eval(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    source = build(cfg.sae)
    model = model_source(cfg)
    place, checkpoint = locate(source, model, cfg.layer, cfg.location)
    plugins = eval_plugins(cfg)
    data = build(cfg.data)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx, n_tokens=export_tokens(cfg))
    one = probe(RunContext(model, place, checkpoint, data, cfg.seed), plugins)
    module = Evaluation(model, [one])

    logger = task_logger(cfg)
    trainer: L.Trainer = build(cfg.trainer, logger=logger or False)
    trainer.callbacks.insert(0, TokenRate())  # before the progress bar, which draws its label
    loop_started = time.perf_counter()
    trainer.test(module, datamodule=data, verbose=False)
    loop_seconds = time.perf_counter() - loop_started

    provenance = results_io.provenance(
        one.run,
        n_tokens=module.n_tokens,
        seconds=round(time.time() - started, 3),
        seconds_test_loop=round(loop_seconds, 3),
        seconds_by_part={k: round(v, 3) for k, v in module.seconds.items()},
    )
    if trainer.is_global_zero:
        (results,) = module.results
        written = results_io.save(out_dir, cfg, results, provenance, module.plugins[0])
        results_io.log_to(logger, results, provenance, module.plugins[0])
        close_loggers()  # W&B prints its summary on closing: the table comes last
        results_io.print_table(results, provenance, written)
        if "export" in plugins:
            print(f"browse its latents: saelab view {out_dir / plugins['export'].settings.subdir}")
    return scalar_results(module.results[0])


def eval_plugins(cfg: DictConfig) -> dict[str, EvalPlugin]:
    """The configured `evals`, and the export where `export` asks for it (`saelab export`
    runs the export alone)."""
    export = export_plugin(cfg)
    plugins = build_plugins(cfg.evals) if cfg.evals or not export else {}
    if export:
        plugins["export"] = export
    return plugins


def export_tokens(cfg: DictConfig) -> int | None:
    """`export.n_tokens` of `saelab export` (None: data.n_tokens)."""
    export = cfg.get("export")
    return export.get("n_tokens") if isinstance(export, DictConfig) else None


def export_plugin(cfg: DictConfig) -> Export | None:
    """`export=true` (eval, sweep) adds the export with its defaults, written to <run>/export;
    `saelab export` configures it through the `export:` node, written to the run dir."""
    export = cfg.get("export")
    if not export:
        return None
    if export is True:
        return Export(subdir="export")
    if not isinstance(export, DictConfig):
        raise UserError(f"export must be true or false, not {export!r}")
    options = OmegaConf.to_container(export, resolve=True)
    options.pop("n_tokens", None)
    explain = cfg.get("explain")
    if options.get("explain") and explain is not None:
        options["explain_settings"] = OmegaConf.to_container(explain, resolve=True)
    return Export(**options)
