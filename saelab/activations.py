"""Activations for training: one model forward per chunk of contexts feeds every hooked SAE.

Contexts are drawn in a seeded random order, their activations at all hooks are collected
into a buffer of many contexts, and batches of tokens are drawn from the buffer in a seeded
random order: batches mix tokens from many documents. The stream is deterministic, so a
resumed run skips to the same batch it would have reached (`start_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from saelab.models import ModelSource


class ActivationStream:
    """Iterable of `{hook: [batch_size, width]}` batches from `tokens` [n_contexts, n_ctx]."""

    def __init__(
        self,
        model: ModelSource,
        hooks: dict[str, int],
        tokens: Tensor,
        batch_size: int,
        buffer_contexts: int = 1024,
        forward_batch: int = 32,
        exclude_first: bool = True,
        seed: int = 0,
    ) -> None:
        self.model, self.hooks, self.batch_size = model, hooks, batch_size
        self.forward_batch, self.exclude_first, self.seed = forward_batch, exclude_first, seed
        self.buffer_contexts = min(buffer_contexts, len(tokens))
        order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
        self.tokens = tokens[order]
        self.start_batch = 0
        self.device = torch.device("cpu")

    @property
    def tokens_per_context(self) -> int:
        return self.tokens.shape[1] - int(self.exclude_first)

    def buffer_batches(self) -> list[int]:
        """Number of batches drawn from each buffer (leftover tokens of a buffer are dropped)."""
        sizes = [
            min(self.buffer_contexts, len(self.tokens) - start)
            for start in range(0, len(self.tokens), self.buffer_contexts)
        ]
        return [size * self.tokens_per_context // self.batch_size for size in sizes]

    def __len__(self) -> int:
        return sum(self.buffer_batches())

    @torch.no_grad()
    def collect(self, contexts: Tensor) -> dict[str, Tensor]:
        """Activations at every hook for `contexts`, from one forward per chunk."""
        stop = max(self.hooks.values()) + 1
        chunks: dict[str, list[Tensor]] = {hook: [] for hook in self.hooks}

        def capture(name: str):
            def hook_fn(act: Tensor, hook) -> Tensor:
                first = int(self.exclude_first)
                chunks[name].append(act[:, first:].reshape(-1, act.shape[-1]))
                return act

            return hook_fn

        hooks = [(name, capture(name)) for name in self.hooks]
        for start in range(0, len(contexts), self.forward_batch):
            batch = contexts[start : start + self.forward_batch].to(self.device)
            self.model.bridge.run_with_hooks(batch, fwd_hooks=hooks, stop_at_layer=stop)
        return {hook: torch.cat(parts) for hook, parts in chunks.items()}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        skip = self.start_batch
        for index, n_batches in enumerate(self.buffer_batches()):
            if skip >= n_batches:
                skip -= n_batches
                continue
            start = index * self.buffer_contexts
            buffer = self.collect(self.tokens[start : start + self.buffer_contexts])
            n_tokens = len(next(iter(buffer.values())))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            order = torch.randperm(n_tokens, generator=generator).to(self.device)
            for b in range(skip, n_batches):
                rows = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield {hook: acts[rows] for hook, acts in buffer.items()}
            skip = 0
