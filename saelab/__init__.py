"""saelab: reproducible experiments with sparse autoencoders on language-model activations."""

from saelab.sae import release as paths  # OpenAI's API: saelab.paths.v5_32k(location, layer)
from saelab.sae.autoencoder import Autoencoder, SparseLatents

__all__ = ["Autoencoder", "SparseLatents", "paths"]
__version__ = "0.1.0"
