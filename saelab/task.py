"""What every command shares: building objects from config nodes with the user's errors intact."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from saelab.errors import UserError


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
