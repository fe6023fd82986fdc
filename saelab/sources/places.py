"""Where an SAE reads: a `Place` (OpenAI's location name and a layer) and its TransformerLens
hook, and the one rule that turns `layer=`/`location=` into places.

Hook names are the contract between a model source and everything downstream; OpenAI's
location names (their README's, plus `resid_pre`) map onto them here. Every command (eval,
export, sweep, train, view) and every checkpoint source goes through `select`, so a place is
decided the same way everywhere: what was asked for, what the checkpoint records, what a
family of checkpoints covers, and the default (OpenAI's README example).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from saelab.errors import UserError

HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "mlp_post_act": "blocks.{layer}.mlp.hook_post",
    "resid_delta_attn": "blocks.{layer}.hook_attn_out",
    "resid_post_attn": "blocks.{layer}.hook_resid_mid",
    "resid_delta_mlp": "blocks.{layer}.hook_mlp_out",
    "resid_post_mlp": "blocks.{layer}.hook_resid_post",
}


def check_location(location: Any) -> None:
    if location not in HOOKS:
        raise UserError(f"unknown location {location!r}; one of {', '.join(HOOKS)}")


@dataclass(frozen=True, order=True)
class Place:
    """A location (OpenAI's name) at a layer: `Place("resid_post_mlp", 2)`."""

    location: str
    layer: int

    def __post_init__(self) -> None:
        check_location(self.location)

    @property
    def hook(self) -> str:
        """The TransformerLens hook name: `blocks.2.hook_resid_post`."""
        return HOOKS[self.location].format(layer=self.layer)

    @property
    def name(self) -> str:
        """`<location>/<layer>`: the place's folder in sweep results."""
        return f"{self.location}/{self.layer}"

    @classmethod
    def of_hook(cls, hook: str) -> Place:
        """`blocks.6.hook_resid_pre` -> `Place("resid_pre", 6)`."""
        block = hook.removeprefix("blocks.").partition(".")[0]
        for location, template in HOOKS.items():
            if block.isdigit() and template.format(layer=block) == hook:
                return cls(location, int(block))
        known = ", ".join(template.format(layer="L") for template in HOOKS.values())
        raise UserError(f"the SAE reads hook {hook!r}, which saelab does not know ({known})")


# Where an SAE reads when neither the config nor the checkpoint says: OpenAI's README example.
DEFAULT = Place("resid_delta_mlp", 6)


def every_place(n_layers: int) -> list[Place]:
    """Every place of a model with `n_layers` blocks."""
    return [Place(location, layer) for location in HOOKS for layer in range(n_layers)]


def check_layers(layer: Any, model: Any) -> None:
    """Each integer of `layer=` is a block of `model` (one clear line, not 'no SAE there')."""
    values = layer if isinstance(layer, Sequence) and not isinstance(layer, str) else [layer]
    for value in values:
        if isinstance(value, int) and not 0 <= value < model.n_layers:
            raise UserError(
                f"layer={value} is out of range: {model.name} has layers 0-{model.n_layers - 1}"
            )


def asked(value: Any, name: str) -> set | None:
    """`layer=`/`location=` as a set of values; None for `all`. A value is one item or a
    list (Hydra's ListConfig included)."""
    if value == "all":
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for v in values:
        if name == "layer" and (not isinstance(v, int) or isinstance(v, bool)):
            raise UserError(f"layer must be all, an integer or a list of integers, got {value}")
        if name == "location" and v not in HOOKS:
            raise UserError(f"unknown location {v!r}; one of {', '.join(HOOKS)} (or all)")
    return set(values)


def select(
    layer: Any,
    location: Any,
    covered: Iterable[Place],
    recorded: Place | None = None,
    default: Place | None = DEFAULT,
    what: str = "the SAE",
) -> list[Place]:
    """The places that `layer` and `location` ask for (each: null, a value, a list or `all`).

    A checkpoint that records its place (`recorded`) reads only there: null means its value,
    and a value that differs is an error. Otherwise null means `default`'s value, and the
    places are those of `covered` (a family's checkpoints, or a model's hooks) that match;
    a value asked for explicitly that `covered` lacks is an error naming what is covered.
    """
    if recorded is not None:
        layers = asked(recorded.layer if layer is None else layer, "layer")
        locations = asked(recorded.location if location is None else location, "location")
        if not ((layers is None or recorded.layer in layers) and
                (locations is None or recorded.location in locations)):  # fmt: skip
            raise UserError(
                f"{what} was trained at {recorded.hook} (location={recorded.location} "
                f"layer={recorded.layer}) but location={location} layer={layer} was asked "
                "for: omit them or match it"
            )
        return [recorded]
    if default is not None:
        layer = default.layer if layer is None else layer
        location = default.location if location is None else location
    if layer is None or location is None:
        raise UserError(f"{what} needs layer= and location= (e.g. layer=2 location=resid_post_mlp)")
    layers, locations = asked(layer, "layer"), asked(location, "location")
    covered = sorted(set(covered))
    chosen = [
        p for p in covered
        if (layers is None or p.layer in layers) and (locations is None or p.location in locations)
    ]  # fmt: skip
    missing = [
        Place(loc, lay)
        for loc in sorted(locations or ())
        for lay in sorted(layers or ())
        if Place(loc, lay) not in covered
    ]
    if missing or not chosen:
        where = ", ".join(p.name for p in missing) or f"location={location} layer={layer}"
        raise UserError(
            f"{what} has no SAE at {where} (it covers {describe(covered)}): choose another "
            "location=/layer=, or another sae="
        )
    return chosen


def describe(places: Sequence[Place]) -> str:
    """`resid_post_mlp layers 0-3, resid_delta_mlp layer 2`: places grouped by location."""
    if not places:
        return "nothing"
    by_location: dict[str, list[int]] = {}
    for place in places:
        by_location.setdefault(place.location, []).append(place.layer)
    parts = []
    for location, layers in by_location.items():
        layers = sorted(layers)
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        span = f"{layers[0]}-{layers[-1]}" if contiguous else ",".join(map(str, layers))
        parts.append(f"{location} layer{'s' if len(layers) > 1 else ''} {span}")
    return ", ".join(parts)
