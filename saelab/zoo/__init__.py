"""The offline model zoo shipped with saelab: a tiny Shakespeare model, its corpus and SAEs.

SAEs live at `saelab/zoo/<model>/saes/<family>/<location>/<layer>.pt` in OpenAI's format,
so `sae=tiny_topk location=resid_post_mlp layer=2` works like OpenAI's families. A family of
several SAEs at one place (the sparsity frontier: one per target L0) keeps each under a
variant folder, `<family>/<variant>/<location>/<layer>`; formats OpenAI's cannot express
(JumpReLU) are saelab's `<layer>.safetensors` + `<layer>.json`.
"""

from __future__ import annotations

from pathlib import Path

from saelab.errors import UserError
from saelab.sources.places import Place, describe

ZOO_DIR = Path(__file__).parent


def family_dir(model: str, family: str, variant: str | None = None) -> Path:
    found = ZOO_DIR / model / "saes" / family
    if not found.is_dir():
        families = sorted(p.name for p in (ZOO_DIR / model / "saes").glob("*") if p.is_dir())
        raise UserError(f"no bundled SAE family {family!r} for {model}; one of {families}")
    if variant is None:
        return found
    if not (found / variant).is_dir() or variant in ("", ".", ".."):
        variants = sorted(p.name for p in found.glob("*") if p.is_dir())
        raise UserError(
            f"the bundled {family} family has no variant {variant!r}; one of {variants}"
        )
    return found / variant


SUFFIXES = (".pt", ".safetensors")  # OpenAI's format; saelab's (with its .json beside it)


def sae_path(model: str, family: str, place: Place, variant: str | None = None) -> Path:
    folder = family_dir(model, family, variant) / place.location
    for suffix in SUFFIXES:
        if (path := folder / f"{place.layer}{suffix}").is_file():
            return path
    have = describe(sae_places(model, family, variant))
    raise UserError(f"the bundled {family} SAEs have none at {place.name}; bundled: {have}")


def sae_places(model: str, family: str, variant: str | None = None) -> list[Place]:
    """Every place a bundled family (or variant) has an SAE for, for sweeps over all of them."""
    found = family_dir(model, family, variant).glob("*/*")
    return sorted(
        Place(path.parent.name, int(path.stem))
        for path in found
        if path.suffix in SUFFIXES and path.stem.isdigit()
    )
