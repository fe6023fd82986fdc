"""`saelab sweep`: many SAEs on the same tokens in one pass -> one results folder per SAE.

The model runs once per batch for every SAE in a group (see `evaluation.BatchEvaluator`).
SAEs load lazily, a group at a time, so the SAEs on the device stay within
`sweep.memory_budget`; each group is one pass over the tokens. Every SAE gets the same files
as a separate `saelab eval` run (`<location>/<layer>/metrics.json`, ...) and the sweep ends
with `sweep.csv` and `sweep.json`. With `resume=true run_name=<name>`, SAEs whose
`metrics.json` exists are skipped and the others (unfinished ones included) are redone.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from saelab.errors import UserError
from saelab.evals import build_plugins
from saelab.evals import results as results_io
from saelab.evals.evaluator import Evaluation, probe, scalar_results
from saelab.sae import release
from saelab.sae.checkpoints import LoadedSAE
from saelab.sources.hooks import HOOKS
from saelab.sources.models import ModelSource
from saelab.tasks.common import build, close_loggers, output_dir
from saelab.tasks.common import logger as task_logger
from saelab.zoo import bundled_places


@dataclass
class Place:
    """One SAE of the sweep: where it reads, the config that loads it, and its results folder."""

    label: str  # the SAE family, or the entry's name in `sweep.saes`
    location: str | None  # None: the hook the checkpoint records
    layer: int | None
    sae: DictConfig

    @property
    def name(self) -> str:
        return f"{self.label}/{self.location}/{self.layer}"


def family_places(sae: DictConfig, n_layers: int) -> list[tuple[str, int]]:
    """Every (location, layer) a family of SAEs covers, for `layer=all` / `location=all`."""
    target = sae.get("_target_")
    if target == "saelab.sae.checkpoints.openai":
        family = release.FAMILIES[sae.family]
        return [(loc, layer) for loc in family.locations for layer in range(n_layers)]
    if target == "saelab.sae.checkpoints.bundled":
        return bundled_places(sae.model, sae.family)
    return [(loc, layer) for loc in HOOKS for layer in range(n_layers)]


def selected(value: Any, name: str) -> set | None:
    """None for `all`, else the set of values asked for (one or a list)."""
    if value == "all":
        return None
    values = list(value) if isinstance(value, ListConfig) else [value]
    if name == "layer" and not all(isinstance(v, int) for v in values):
        raise UserError(f"layer must be all, an integer or a list of integers, got {value}")
    if name == "location" and not set(values) <= set(HOOKS):
        raise UserError(f"unknown location in {value}; each one of {', '.join(HOOKS)} (or all)")
    return set(values)


def places_for(cfg: DictConfig, model: ModelSource) -> list[Place]:
    """The `sae` family expanded over `layer` x `location`, then the explicit `sweep.saes`."""
    out = []
    if cfg.get("sae"):
        layers, locations = selected(cfg.layer, "layer"), selected(cfg.location, "location")
        for location, layer in family_places(cfg.sae, model.n_layers):
            if (layers is None or layer in layers) and (locations is None or location in locations):
                node = OmegaConf.merge(cfg.sae, {"location": location, "layer": layer})
                out.append(Place(cfg.sae.get("family", "sae"), location, layer, node))
    for name, node in (cfg.sweep.saes or {}).items():
        place = Place(name, node.get("location"), node.get("layer"), loader_node(node))
        if place.location is None or place.layer is None:  # read the hook from the checkpoint
            loaded: LoadedSAE = build(place.sae)
            place.location, place.layer = loaded.place(model, place.location, place.layer)
            del loaded
        out.append(place)
    if not out:
        raise UserError("the sweep selects no SAE: check sae=, layer=, location= and sweep.saes")
    return out


def loader_node(node: DictConfig) -> DictConfig:
    """An explicit entry's SAE config: its `location`/`layer` go to loaders that take them
    (OpenAI's families, the zoo), not to those that read one file."""
    if "_target_" not in node:
        raise UserError("each sweep.saes entry needs a _target_ (e.g. saelab.sae.checkpoints.load)")
    takes = inspect.signature(get_method(node._target_)).parameters
    drop = [key for key in ("location", "layer") if key not in takes]
    return OmegaConf.masked_copy(node, [key for key in node if key not in drop])


def groups(
    places: list[Place], model: ModelSource, budget: float
) -> Iterator[list[tuple[Place, LoadedSAE]]]:
    """SAEs loaded one by one and handed out in groups whose weights fit `budget` bytes (an SAE
    larger than the budget goes alone); a group is loaded only when the last one is done."""
    group: list[tuple[Place, LoadedSAE]] = []
    used = 0
    for place in places:
        loaded: LoadedSAE = build(place.sae)
        loaded.place(model, place.location, place.layer)  # agrees with the checkpoint's hook
        tensors = [*loaded.sae.parameters(), *loaded.sae.buffers()]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if group and used + size > budget:
            yield group
            group, used = [], 0
        group.append((place, loaded))
        used += size
    if group:
        yield group


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, verbose=False)
    out_dir = output_dir(cfg)
    model: ModelSource = build(cfg.model)
    places = places_for(cfg, model)
    todo = [p for p in places if not (out_dir / p.name / "metrics.json").is_file()]
    if cfg.resume and len(todo) < len(places):
        print(f"resume: {len(places) - len(todo)} of {len(places)} SAEs are complete, skipped")
    elif not cfg.resume:
        todo = places
    data = build(cfg.data)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    logger = task_logger(cfg)

    # one trainer for every group: under DDP, Lightning starts the other ranks once per process
    trainer: L.Trainer = build(cfg.trainer, logger=False)
    for group in groups(todo, model, float(cfg.sweep.memory_budget)):
        probes = [
            probe(model, p.location, p.layer, loaded.sae, build_plugins(cfg.evals))
            for p, loaded in group
        ]
        module = Evaluation(model, probes)
        started = time.perf_counter()
        trainer.test(module, datamodule=data, verbose=False)
        seconds = round(time.perf_counter() - started, 3)
        if not trainer.is_global_zero:
            continue
        for (place, loaded), one, results, plugins in zip(
            group, probes, module.results, module.plugins, strict=True
        ):
            provenance = results_io.provenance(
                model, one.hook, place.layer, place.location, loaded, data, module.n_tokens,
                seconds_test_loop=seconds,  # of the whole group, which shares each forward
                group_size=len(group),
            )
            run_cfg = cfg.copy()  # the config of this SAE alone, as a separate eval would have
            with open_dict(run_cfg):
                run_cfg.sae, run_cfg.layer = place.sae, place.layer
                run_cfg.location = place.location
            results_io.save(out_dir / place.name, run_cfg, results, provenance, plugins)
            if logger:
                logger.log_metrics(
                    {f"{place.name}/{k}": v for k, v in scalar_results(results).items()}
                )
        print(f"evaluated {len(group)} SAE(s) in {seconds:.0f} s")
    rows = results_io.write_summary(out_dir)
    close_loggers()
    print(f"{len(rows)} SAEs: {out_dir / 'sweep.csv'}")
    return {"n_saes": len(rows)}
