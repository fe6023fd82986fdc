"""Evaluation plugins: those built in, and how users' own plugins are found.

Select plugins with `evals=[reconstruction,density]`; add your own by class path
(`+evals.mine._target_=my_pkg.MyPlugin`) or, for an installed package that declares an
entry point in the `saelab.evals` group, by its name (`+evals.mine={}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from saelab.errors import UserError
from saelab.evals.ablation_sparsity import AblationSparsity
from saelab.evals.absorption import Absorption
from saelab.evals.base import EvalBatch, EvalPlugin
from saelab.evals.density import Density
from saelab.evals.downstream import Downstream
from saelab.evals.probe import ProbeLoss
from saelab.evals.reconstruction import Reconstruction
from saelab.evals.sparse_probing import SparseProbing

ENTRY_POINT_GROUP = "saelab.evals"

__all__ = [
    "AblationSparsity",
    "Absorption",
    "Density",
    "Downstream",
    "EvalBatch",
    "EvalPlugin",
    "ProbeLoss",
    "Reconstruction",
    "SparseProbing",
    "build_plugins",
]


def build_plugins(configs: dict[str, Any]) -> dict[str, EvalPlugin]:
    """Instantiate each configured plugin; `_target_` wins, else the entry point of that name."""
    if not configs:
        raise UserError("no evaluation plugins selected: e.g. evals=[reconstruction,density]")
    if not isinstance(configs, Mapping):
        raise UserError(f"evals={configs} must name plugins: e.g. evals=[reconstruction,density]")
    plugins = {}
    for name, config in configs.items():
        config = dict(config or {})
        try:
            plugin = instantiate(config) if "_target_" in config else _entry_point(name)(**config)
        except InstantiationException as error:
            raise UserError(f"could not build eval plugin {name!r}: {error}") from None
        if not isinstance(plugin, EvalPlugin):
            raise UserError(f"eval plugin {name!r} is a {type(plugin).__name__}, not an EvalPlugin")
        plugins[name] = plugin
    return plugins


def _entry_point(name: str) -> type[EvalPlugin]:
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        raise UserError(
            f"unknown eval plugin {name!r}: give it a _target_ (+evals.{name}._target_=pkg.Class) "
            f"or install a package with a {ENTRY_POINT_GROUP!r} entry point named {name!r}"
            + (f" (installed: {', '.join(sorted(found))})" if found else "")
        )
    return found[name].load()
