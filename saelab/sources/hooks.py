"""OpenAI's hook locations as TransformerLens hook names: the contract between a model source
and everything downstream (their README's names, plus `resid_pre`)."""

from __future__ import annotations

from saelab.errors import UserError

HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "mlp_post_act": "blocks.{layer}.mlp.hook_post",
    "resid_delta_attn": "blocks.{layer}.hook_attn_out",
    "resid_post_attn": "blocks.{layer}.hook_resid_mid",
    "resid_delta_mlp": "blocks.{layer}.hook_mlp_out",
    "resid_post_mlp": "blocks.{layer}.hook_resid_post",
}


def check_location(location: str) -> None:
    if location not in HOOKS:
        raise UserError(f"unknown location {location!r}; one of {', '.join(HOOKS)}")


def location_of(hook: str) -> tuple[str, int]:
    """`blocks.6.hook_resid_pre` -> (`resid_pre`, 6): the place of a TransformerLens hook."""
    block = hook.removeprefix("blocks.").partition(".")[0]
    for location, template in HOOKS.items():
        if block.isdigit() and template.format(layer=block) == hook:
            return location, int(block)
    known = ", ".join(template.format(layer="L") for template in HOOKS.values())
    raise UserError(f"the SAE reads hook {hook!r}, which saelab does not know ({known})")
