"""saelab: reproducible experiments with sparse autoencoders on language-model activations."""

from saelab import paths
from saelab.autoencoder import Autoencoder, SparseLatents

__all__ = ["Autoencoder", "SparseLatents", "paths"]
__version__ = "0.1.0"
