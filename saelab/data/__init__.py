"""Tokens (`tokens`: text sources packed into contexts) and, for training, the activations
they produce at the hooks (`activations`: streamed, shuffled, cached)."""
