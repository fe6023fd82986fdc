"""Where OpenAI's GPT-2 small SAEs live, and which (location, layer) each family covers.

`saelab.paths.v5_32k("resid_delta_mlp", 6)` returns the same URL as OpenAI's `paths.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from saelab.errors import UserError
from saelab.sources.places import Place

ROOT = "az://openaipublic/sparse-autoencoder/gpt2-small"
GPT2_SMALL_LAYERS = 12


@dataclass(frozen=True)
class Family:
    name: str
    suffix: str
    locations: tuple[str, ...]

    def url(self, location: str, layer_index: int) -> str:
        if location not in self.locations:
            raise UserError(
                f"OpenAI's {self.name} SAEs have no location {location!r}; this family has "
                f"{', '.join(self.locations)} (choose another sae= family or location=)"
            )
        if not 0 <= layer_index < GPT2_SMALL_LAYERS:
            raise UserError(
                f"OpenAI's {self.name} SAEs cover GPT-2 small layers 0-11, not layer={layer_index}"
            )
        return f"{ROOT}/{location}{self.suffix}/autoencoders/{layer_index}.pt"

    def places(self) -> list[Place]:
        return [Place(loc, layer) for loc in self.locations for layer in range(GPT2_SMALL_LAYERS)]


RELU_LOCATIONS = ("mlp_post_act", "resid_delta_mlp")
TOPK_LOCATIONS = ("resid_delta_attn", "resid_delta_mlp", "resid_post_attn", "resid_post_mlp")
FAMILIES = {
    "v1": Family("v1", "", RELU_LOCATIONS),
    "v4": Family("v4", "_v4", RELU_LOCATIONS),
    "v5_32k": Family("v5_32k", "_v5_32k", TOPK_LOCATIONS),
    "v5_128k": Family("v5_128k", "_v5_128k", TOPK_LOCATIONS),
}


def v1(location: str, layer_index: int) -> str:
    """ReLU SAEs, 32768 latents, trained with L1 0.01."""
    return FAMILIES["v1"].url(location, layer_index)


def v4(location: str, layer_index: int) -> str:
    """ReLU SAEs, 32768 latents (a later run of v1's recipe)."""
    return FAMILIES["v4"].url(location, layer_index)


def v5_32k(location: str, layer_index: int) -> str:
    """TopK (k=32) SAEs with 2^15 latents on layer-normed inputs."""
    return FAMILIES["v5_32k"].url(location, layer_index)


def v5_128k(location: str, layer_index: int) -> str:
    """TopK (k=32) SAEs with 2^17 latents on layer-normed inputs."""
    return FAMILIES["v5_128k"].url(location, layer_index)
