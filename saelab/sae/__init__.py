"""The SAE: the `Autoencoder` module and its sparse kernels, OpenAI's released checkpoints
(`release`), and loading any checkpoint with provenance (`checkpoints`)."""

from saelab.sae.autoencoder import Autoencoder, SparseLatents

__all__ = ["Autoencoder", "SparseLatents"]
