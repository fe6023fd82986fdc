"""The configs: where they are, composed outside a Hydra app, and objects built from them, with
one-line errors. Used by the commands and by anything else that builds from a config (the
prompt view)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from saelab.errors import UserError


def config_dir() -> Path:
    """Configs ship inside the wheel as saelab/conf; a source checkout keeps them in conf/."""
    package = Path(__file__).parent
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


def compose(command: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """`conf/<command>.yaml` with `overrides`, outside a Hydra app (with `hydra`, Hydra's own
    node too: run directories); a wrong override is a `UserError` (one line), like other bad
    input."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3", job_name=command):
            return hydra_compose(command, overrides=overrides, return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException, ValueError) as error:  # ValueError: an
        # override Hydra cannot parse as its group's type, e.g. evals=5
        text = str(error).split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lines = [line for line in lines if "HYDRA_FULL_ERROR" not in line]
        raise UserError(" ".join(lines)) from None


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
