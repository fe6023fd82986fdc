"""`saelab <command> [hydra overrides]`: a thin dispatcher onto one Hydra app per command."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from saelab.config import compose, config_dir
from saelab.errors import UserError, exit_with
from saelab.tasks.checks import RUN_RULES, apply, check_writable
from saelab.tasks.common import close_loggers, quiet_console

# command -> (module with `run(cfg)`, one-line description); each has conf/<command>.yaml
# (export is the eval loop with the export plugin alone: the same `run`, its own defaults).
COMMANDS = {
    "eval": ("saelab.tasks.eval", "evaluate an SAE at a hook of a model with evaluation plugins"),
    "export": ("saelab.tasks.eval", "export every latent's statistics and examples for the viewer"),
    "train": ("saelab.tasks.train", "train TopK or ReLU+L1 SAEs at one or more hooks of a model"),
    "sweep": ("saelab.tasks.sweep", "evaluate many SAEs (layers x locations) in one pass"),
}
# command -> (module with `main(argv)`, description): plain argument parsing, no Hydra.
TOOLS = {
    "convert": ("saelab.tasks.convert", "convert an SAE between formats (saelab, openai, saelens)"),
    "view": ("saelab.tasks.view", "browse exported latents and runs in the browser (view --help)"),
    "compare": ("saelab.tasks.compare", "paired differences of two runs' metrics (same tokens)"),
    "match": ("saelab.tasks.match", "match each latent of one SAE to another's by decoder cosine"),
}
USAGE = """usage: saelab <command> [hydra overrides] [-m]

commands:
{commands}

examples:
  saelab eval layer=6 location=resid_delta_mlp
  saelab eval model=random_gpt2 data=random_tokens sae=file sae.path=sae.pt
  saelab eval -m layer=0,1,2 location=resid_post_mlp,resid_delta_mlp
  saelab sweep experiment=tiny_all       (offline: every bundled SAE, one pass)
  saelab eval sae=auto sae.path=<SAELens dir>   (any format; hook from its cfg.json)
  saelab convert <in> <out> --to saelens
  saelab compare <sweep>/topk/resid_post_mlp/2 <sweep>/topk/resid_post_mlp/3
  saelab match <32k SAE> <128k SAE> --out matches.json
  saelab export experiment=tiny          (offline: every latent of the tiny SAE, for the viewer)
  saelab eval experiment=tiny export=true   (the eval run also writes the export, same pass)
  saelab eval --help          (Hydra's help: config groups and options)
"""


def user_errors_exit_2(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Bad input ends with one line and exit code 2; loggers are closed either way."""

    @wraps(run)
    def task(cfg: DictConfig) -> Any:
        quiet_console(bool(cfg.get("verbose")))
        try:
            return run(cfg)
        except MissingMandatoryValue as error:
            exit_with(UserError(f"{error.full_key} needs a value: add {error.full_key}=..."))
        except UserError as error:
            exit_with(error)
        except KeyboardInterrupt:  # files are written atomically: nothing half-done is kept
            print("saelab: interrupted; rerun with resume=true to carry on", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            close_loggers()

    return task


def relaunchable(
    run: Callable[[DictConfig], Any], script: str, command: str
) -> Callable[[DictConfig], Any]:
    """Lightning's DDP launcher starts ranks 1.. by rerunning `sys.argv` (adding Hydra's run
    directory, so every rank writes into one): once Hydra has parsed it, `sys.argv` becomes
    the command line of this one job again, command name included. It does so once per
    process, so a sweep cannot run DDP jobs one after another."""

    @wraps(run)
    def task(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and "ddp" in str(cfg.trainer.get("strategy")).lower():
            raise UserError(
                "a -m sweep cannot run trainer=ddp jobs (Lightning starts the other ranks once "
                "per process): run each job as its own command"
            )
        sys.argv = [script, command, *hydra_cfg.overrides.task]
        return run(cfg)

    return task


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    listed = {**COMMANDS, **TOOLS}
    commands = "\n".join(f"  {name:8s} {desc}" for name, (_, desc) in listed.items())
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(commands=commands))
        raise SystemExit(0 if argv else 2)
    command, overrides = argv[0], argv[1:]
    if command in TOOLS:
        return importlib.import_module(TOOLS[command][0]).main(overrides)
    if command not in COMMANDS:
        exit_with(
            UserError(
                f"unknown command {command!r}; one of {', '.join(listed)} "
                "(saelab --help lists them)"
            )
        )
    if not any(arg.startswith("-") for arg in overrides):  # Hydra's own flags, -m sweeps
        try:
            cfg = compose(command, overrides, hydra=True)
            apply(cfg, RUN_RULES)  # before Hydra makes the run folder from run_name
            check_writable(Path(cfg.hydra.run.dir), "hydra.run.dir")
        except UserError as error:
            exit_with(error)
    # a library-internal deprecation inside Lightning, not something users can act on
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    import hydra

    run = importlib.import_module(COMMANDS[command][0]).run
    script, sys.argv = sys.argv[0], [f"saelab {command}", *overrides]  # what Hydra parses
    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=command)
    app(user_errors_exit_2(relaunchable(run, script, command)))()
