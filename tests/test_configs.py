"""Every option of every config group composes for every command that uses the group, and the
offline ones instantiate (in the style of lightning-hydra-template's config tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from saelab.cli import COMMANDS
from saelab.config import config_dir

CONF = Path(config_dir())
# experiments are named sets of overrides for particular commands
EXPERIMENTS = {
    "tiny": ("eval", "sweep", "export"),
    "train/tiny": ("train",),
    "train/tiny_frontier": ("train",),
}  # others: sweeps


def groups_of(command: str) -> list[str]:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(command, return_hydra_config=True)
    return [g for g in cfg.hydra.runtime.choices if not g.startswith("hydra")]


def cases() -> list[tuple[str, str, str]]:
    out = []
    for command in COMMANDS:
        if not (CONF / f"{command}.yaml").is_file():
            continue
        for group in groups_of(command):
            options = (p.relative_to(CONF / group) for p in (CONF / group).rglob("*.yaml"))
            for option in sorted(o.with_suffix("").as_posix() for o in options):
                if group == "experiment" and command not in EXPERIMENTS.get(option, ("sweep",)):
                    continue
                out.append((command, group, option))
    return out


@pytest.mark.parametrize(("command", "group", "option"), cases())
def test_every_option_composes(command, group, option, tmp_path):
    override = f"evals=[{option}]" if group == "evals" else f"{group}={option}"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(command, overrides=[override, f"paths.output_dir={tmp_path}"])
    assert cfg.task_name == command
    for node in ("data", "model", "trainer", "logger"):  # every interpolation resolves
        OmegaConf.to_container(cfg[node], resolve=True)
    if group == "evals":
        (plugin,) = cfg.evals.values()
        assert instantiate(plugin).__class__.__module__.startswith("saelab.evals")
    if group == "trainer" and option == "default":
        assert instantiate(cfg.trainer, logger=False).max_epochs is None
    if group == "data":
        assert cfg.data.n_ctx == 64  # OpenAI's context length for every data source
    if command == "train":  # the recipe alone says what SAE is trained
        recipe = instantiate(cfg.recipe)
        assert recipe.n_latents == cfg.recipe.n_latents > 0
        assert "sae" not in cfg


def test_a_task_runs_with_a_composed_config_outside_the_cli(tmp_path):
    """Task functions take a composed config: no Hydra app, output where `paths` says."""
    from saelab.config import compose as compose_config
    from saelab.tasks import eval as eval_task

    overrides = ["experiment=tiny", "logger=none", "data.n_tokens=2048", "evals=[density]"]
    cfg = compose_config("eval", [*overrides, f"paths.output_dir={tmp_path}"])
    metrics = eval_task.run(cfg)
    assert 0 <= metrics["density/dead_fraction"] < 1
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.parametrize("command", ["eval", "sweep", "train"])
def test_the_tasks_group_chooses_what_the_probing_plugins_read(command):
    """`tasks=<option>` picks the token tasks of `probe` and the texts of `sparse_probing`;
    a plugin option given on the command line still wins."""
    from saelab.data import labelled, token_tasks
    from saelab.evals import build_plugins

    def plugins(*overrides: str) -> dict:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose(command, overrides=["evals=[probe,sparse_probing]", *overrides])
        return build_plugins(cfg.evals)

    default = plugins()
    assert default["probe"].tasks == token_tasks.TASKS
    assert default["sparse_probing"].datasets == list(labelled.BUNDLED)
    assert plugins("tasks=saebench")["sparse_probing"].datasets == list(labelled.HUB)
    assert plugins("tasks=letters")["probe"].tasks == token_tasks.FIRST_LETTER
    chosen = plugins("tasks=saebench", "evals.sparse_probing.datasets=[shakespeare_genre]")
    assert chosen["sparse_probing"].datasets == ["shakespeare_genre"]
