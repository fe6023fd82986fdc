"""The offline model zoo shipped with saelab: a tiny Shakespeare model, its corpus and SAEs.

SAEs live at `saelab/zoo/<model>/saes/<family>/<location>/<layer>.pt` in OpenAI's format,
so `sae=tiny_topk location=resid_post_mlp layer=2` works like OpenAI's families.
"""

from __future__ import annotations

from pathlib import Path

from saelab.errors import UserError
from saelab.sources.places import Place, describe

ZOO_DIR = Path(__file__).parent


def family_dir(model: str, family: str) -> Path:
    found = ZOO_DIR / model / "saes" / family
    if not found.is_dir():
        families = sorted(p.name for p in (ZOO_DIR / model / "saes").glob("*"))
        raise UserError(f"no bundled SAE family {family!r} for {model}; one of {families}")
    return found


def sae_path(model: str, family: str, place: Place) -> Path:
    path = family_dir(model, family) / place.location / f"{place.layer}.pt"
    if not path.is_file():
        have = describe(sae_places(model, family))
        raise UserError(f"the bundled {family} SAEs have none at {place.name}; bundled: {have}")
    return path


def sae_places(model: str, family: str) -> list[Place]:
    """Every place a bundled family has an SAE for, for sweeps over all of them."""
    found = family_dir(model, family).glob("*/*.pt")
    return sorted(Place(path.parent.name, int(path.stem)) for path in found)
