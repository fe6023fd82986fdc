"""`saelab sweep`: many SAEs on the same tokens in one pass -> one results folder per SAE.

The model runs once per batch for every SAE in a group (see `evaluation.BatchEvaluator`). SAEs
load lazily, a group at a time, so the SAEs on the device, their weights and their plugins'
per-context state (`device_bytes`), stay within `sweep.memory_budget`; each group is one pass
over the tokens. Every SAE gets the same files as a separate `saelab eval` run
(`<family>/<location>/<layer>/metrics.json`, and with `export=true` its viewer export in
`export/`, from the same pass) and the sweep ends with `sweep.csv` and `sweep.json`. With
`resume=true run_name=<name>`, SAEs whose `metrics.json` exists are skipped and the others
(unfinished ones included) are redone. With `sweep.match=true` the SAEs that share a place are
then matched latent by latent (`match_sweep`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from saelab.config import build
from saelab.errors import UserError
from saelab.evals import results as results_io
from saelab.evals.base import EvalPlugin, RunContext
from saelab.evals.evaluator import Evaluation, probe
from saelab.formats.base import Checkpoint
from saelab.io import write_json
from saelab.sae.checkpoints import Source, places
from saelab.sae.match import Candidate, about, correlations, match, pairs, record
from saelab.sources.models import ModelSource
from saelab.sources.places import Place
from saelab.sources.precision import run_device
from saelab.tasks.checks import check_sweep
from saelab.tasks.common import close_loggers, model_source, output_dir
from saelab.tasks.common import logger as task_logger
from saelab.tasks.eval import eval_plugins

PLACEMENT = ("location", "layer")  # keys of a `sweep.saes` entry that say where, not what


@dataclass
class Entry:
    """One SAE of the sweep: its family, where it reads, the source that loads it, its config
    (as a separate eval run would record it) and its folder (the family, or its name in
    `sweep.saes`: entries of one family, a frontier's SAEs, each get a folder)."""

    family: str
    place: Place
    source: Source
    sae: DictConfig
    folder: str

    @property
    def name(self) -> str:
        """Its results folder: `<folder>/<location>/<layer>`."""
        return f"{self.folder}/{self.place.name}"

    def load(self, model: ModelSource) -> Checkpoint:
        checkpoint = self.source.load(self.place)
        checkpoint.check_model_name(model.name)
        checkpoint.family = self.family
        return checkpoint


def entries(cfg: DictConfig, model: ModelSource) -> list[Entry]:
    """The `sae` family expanded over `layer` x `location`, then the explicit `sweep.saes`
    (each in the folder of its name)."""
    out = []
    if cfg.get("sae"):
        source = build(cfg.sae)
        family = source.family or "sae"
        for place, _ in places(source, model, cfg.layer, cfg.location):
            out.append(Entry(family, place, source, cfg.sae, family))
    for name, node in (cfg.sweep.saes or {}).items():
        if "_target_" not in node:
            raise UserError(
                f"sweep.saes.{name} needs a _target_ (e.g. saelab.sae.checkpoints.Files)"
            )
        sae = OmegaConf.masked_copy(node, [key for key in node if key not in PLACEMENT])
        source = build(sae)
        found = places(source, model, node.get("layer"), node.get("location"))
        if len(found) != 1:
            raise UserError(f"sweep.saes.{name} must name one place (its location and layer)")
        # filed under its source's family (a zoo or release family) where it has one
        out.append(Entry(source.family or name, found[0][0], source, sae, name))
    if not out:
        raise UserError("the sweep selects no SAE: check sae=, layer=, location= and sweep.saes")
    return out


def groups(
    todo: list[Entry],
    model: ModelSource,
    budget: float,
    plugins: Iterable[EvalPlugin],
    n_contexts: int,
) -> Iterator[list[tuple[Entry, Checkpoint]]]:
    """SAEs loaded one by one and handed out in groups whose `device_bytes` fit `budget` (an
    SAE larger than the budget goes alone); a group is loaded only when the last one is done."""
    group: list[tuple[Entry, Checkpoint]] = []
    used = 0
    for entry in todo:
        checkpoint = entry.load(model)
        size = device_bytes(RunContext(model, entry.place, checkpoint), plugins, n_contexts)
        if group and used + size > budget:
            yield group
            group, used = [], 0
        group.append((entry, checkpoint))
        used += size
    if group:
        yield group


def device_bytes(run: RunContext, plugins: Iterable[EvalPlugin], n_contexts: int) -> int:
    """What an SAE holds on the device during a pass: its weights, and its plugins' state per
    context (`EvalPlugin.context_bytes`) for all `n_contexts` contexts, the number that
    `compute` gathers on every rank under DDP too."""
    tensors = [*run.sae.parameters(), *run.sae.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    return weights + n_contexts * sum(plugin.context_bytes(run) for plugin in plugins)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_sweep(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    out_dir = output_dir(cfg)
    model = model_source(cfg)
    every = entries(cfg, model)
    todo = [e for e in every if results_io.completed(out_dir / e.name) is None]
    if cfg.resume:
        for stale in out_dir.rglob(".*.partial"):  # temp files of a killed run's writes
            stale.unlink(missing_ok=True)
    if cfg.resume and len(todo) < len(every):
        print(f"resume: {len(every) - len(todo)} of {len(every)} SAEs are complete, skipped")
    elif not cfg.resume:
        todo = every
    data = build(cfg.data)
    data.prepare(model.tokenizer, model.vocab_size, model.n_ctx)
    logger = task_logger(cfg)

    # one trainer for every group: under DDP, Lightning starts the other ranks once per process
    trainer: L.Trainer = build(cfg.trainer, logger=False)
    counted = eval_plugins(cfg).values()  # read for their state per context alone
    for group in groups(todo, model, float(cfg.sweep.memory_budget), counted, len(data.tokens)):
        probes = [
            probe(RunContext(model, entry.place, checkpoint, data, cfg.seed), eval_plugins(cfg))
            for entry, checkpoint in group
        ]
        module = Evaluation(model, probes)
        started = time.perf_counter()
        trainer.test(module, datamodule=data, verbose=False)
        seconds = round(time.perf_counter() - started, 3)
        if not trainer.is_global_zero:
            continue
        for (entry, _), one, results, plugins in zip(
            group, probes, module.results, module.plugins, strict=True
        ):
            provenance = results_io.provenance(
                one.run,
                module.n_tokens,
                seconds_test_loop=seconds,  # of the whole group, which shares each forward
                seconds_by_part={k: round(v, 3) for k, v in module.seconds.items()},
                group_size=len(group),
            )
            run_cfg = cfg.copy()  # the config of this SAE alone, as a separate eval would have
            with open_dict(run_cfg):
                run_cfg.sae, run_cfg.layer = entry.sae, entry.place.layer
                run_cfg.location = entry.place.location
            results_io.save(out_dir / entry.name, run_cfg, results, provenance, plugins)
            if logger:
                logger.log_metrics(
                    {
                        f"{entry.name}/{k}": v
                        for k, v in results_io.with_standard_errors(results).items()
                    }
                )
        print(f"evaluated {len(group)} SAE(s) in {seconds:.0f} s")
    rows = results_io.write_summary(out_dir)
    if cfg.sweep.match and trainer.is_global_zero:
        device = run_device(str(cfg.trainer.accelerator))
        inputs = PlaceInputs(model.to(device), data, int(cfg.sweep.match_tokens), device)
        found = match_sweep(out_dir, every, model, device, inputs)
        print(f"{len(found)} pairs of SAEs matched: {out_dir / MATCHES_FILE}")
    close_loggers()
    print(f"{len(rows)} SAEs: {out_dir / 'sweep.csv'}")
    return {"n_saes": len(rows)}


MATCHES_FILE = "matches.json"  # the pairs' summaries; each pair's matches in matches/<place>/
SUMMARY = ("matched_above_0.7", "matched_above_0.9", "split_fraction", "mean_cosine")


class PlaceInputs:
    """A place's activations on the sweep's first `n_tokens` evaluated tokens (its first
    contexts; a context's first position left out where the metrics leave it out), [tokens, d]
    batches on `device`, for the activation correlations of matched latents. One forward per
    place, kept while its pairs are matched (`pairs` lists a place's pairs together)."""

    def __init__(self, model: ModelSource, data: Any, n_tokens: int, device: Any) -> None:
        self.model, self.data, self.n_tokens, self.device = model, data, n_tokens, device
        self.place: Place | None = None
        self.batches: list[Tensor] = []

    def __call__(self, place: Place) -> list[Tensor]:
        if place != self.place:
            self.place, self.batches = place, []
            first = 1 if self.data.exclude_first else 0
            per_context = self.data.tokens.shape[1] - first
            contexts = self.data.tokens[: -(-self.n_tokens // per_context)]
            for batch in contexts.split(self.data.batch_size):
                acts, _ = self.model.capture(
                    batch.to(self.device), [place.hook], stop_at_layer=place.layer + 1
                )
                self.batches.append(acts[place.hook][:, first:].flatten(0, 1).float())
        return self.batches


def match_sweep(
    out_dir: Path,
    every: list[Entry],
    model: ModelSource,
    device: Any,
    inputs: PlaceInputs,
) -> list[dict[str, Any]]:
    """`sweep.match=true`: the SAEs at each place matched in the pairs `match.pairs` picks by
    their measured L0, and with `sweep.match_tokens` > 0 each latent's activation correlation
    with its match on those tokens (`inputs`). Each pair's record (`saelab match --out`'s
    schema, each side with its run folder) goes to
    `matches/<location>/<layer>/<A folder>__<B folder>.json`, the summaries to
    `matches.json`. A pair whose file records both SAEs' present sha256 (and correlations,
    if asked) is not redone (resume); two SAEs are loaded at a time (`match` bounds the
    products)."""
    runs = {e.name: json.loads((out_dir / e.name / "metrics.json").read_text()) for e in every}
    candidates = [
        Candidate(e.name, e.place.name, e.family,
                  int(runs[e.name]["provenance"]["sae_n_latents"]),
                  float(runs[e.name]["metrics"]["sparsity/l0"]))
        for e in every
    ]  # fmt: skip
    entry = {e.name: e for e in every}

    @lru_cache(maxsize=2)  # an SAE is in consecutive pairs (its chain, each other family's)
    def load(name: str) -> Checkpoint:
        return entry[name].load(model)

    summaries = []
    for a, b, why in pairs(candidates):
        relative = f"matches/{a.place}/{entry[a.name].folder}__{entry[b.name].folder}.json"
        shas = [runs[c.name]["provenance"]["sae_sha256"] for c in (a, b)]
        done = finished(out_dir / relative, shas, inputs.n_tokens)
        if done is None:
            sae_a, sae_b = load(a.name).sae.to(device), load(b.name).sae.to(device)
            found = match(sae_a, sae_b, device=device)
            batches = inputs(entry[a.name].place) if inputs.n_tokens > 0 else []
            correlation = correlations(sae_a, sae_b, found.best, batches) if batches else None
            sides = about(load(a.name), run=a.name), about(load(b.name), run=b.name)
            done = record(found, *sides, correlation, sum(len(x) for x in batches))
            write_json(out_dir / relative, done)
        summaries.append({
            "a": a.name, "b": b.name, "place": a.place, "pairing": why, "file": relative,
            "l0_a": a.l0, "l0_b": b.l0, "n_latents_a": a.n_latents, "n_latents_b": b.n_latents,
            **{key: done[key] for key in SUMMARY}, "mean_correlation": done.get("mean_correlation"),
        })  # fmt: skip
    write_json(out_dir / MATCHES_FILE, summaries)
    return summaries


def finished(path: Path, shas: list[str | None], match_tokens: int) -> dict[str, Any] | None:
    """A pair's record if its file is complete, matched these very SAEs and correlated their
    latents as `sweep.match_tokens` asks (or not at all for 0), else None."""
    try:
        done = json.loads(path.read_text())
        same = [done["a"]["sha256"], done["b"]["sha256"]] == shas and None not in shas
        correlated = ("correlation" in done) == (match_tokens > 0)
        return done if same and correlated and all(key in done for key in SUMMARY) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
