"""The offline model zoo shipped with saelab: a tiny Shakespeare model, its corpus and SAEs.

SAEs live at `saelab/zoo/<model>/saes/<family>/<location>/<layer>.pt` in OpenAI's format,
so `sae=tiny_topk location=resid_post_mlp layer=2` works like OpenAI's families.
"""

from __future__ import annotations

from pathlib import Path

from saelab.errors import UserError

ZOO_DIR = Path(__file__).parent


def sae_path(model: str, family: str, location: str, layer: int) -> Path:
    family_dir = ZOO_DIR / model / "saes" / family
    if not family_dir.is_dir():
        families = sorted(p.name for p in (ZOO_DIR / model / "saes").glob("*"))
        raise UserError(f"no bundled SAE family {family!r} for {model}; one of {families}")
    path = family_dir / location / f"{layer}.pt"
    if not path.is_file():
        have = sorted(f"{p.parent.name}/{p.stem}" for p in family_dir.glob("*/*.pt"))
        raise UserError(
            f"the bundled {family} SAEs have no location={location} layer={layer}; "
            f"bundled: {', '.join(have)}"
        )
    return path


def bundled_places(model: str, family: str) -> list[tuple[str, int]]:
    """(location, layer) of every bundled SAE of a family, for sweeps over all of them."""
    found = (ZOO_DIR / model / "saes" / family).glob("*/*.pt")
    return sorted((path.parent.name, int(path.stem)) for path in found)
