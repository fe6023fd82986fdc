"""Activations for training: one model forward per chunk of contexts feeds every hooked SAE.

Contexts are taken in a seeded random order; the activations of `buffer_contexts` contexts
at all hooks form a buffer, and batches of tokens are drawn from it in a seeded random
order, so a batch mixes tokens of many documents. The stream is deterministic: a resumed run
skips to the batch it had reached (`start_batch`), and a stream read back from an on-disk
cache yields exactly the batches of the live one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from saelab.errors import UserError, first_line
from saelab.io import atomic_path, write_json
from saelab.sources.models import ModelSource

CACHE_FORMAT = "saelab-activations/1"
MANIFEST = "manifest.json"


class BufferedStream:
    """Iterable of `{hook: [batch_size, width]}` batches drawn from shuffled buffers."""

    def __init__(
        self,
        hooks: dict[str, int],
        widths: dict[str, int],
        n_contexts: int,
        tokens_per_context: int,
        batch_size: int,
        buffer_contexts: int,
        seed: int,
    ) -> None:
        self.hooks, self.widths, self.batch_size, self.seed = hooks, widths, batch_size, seed
        self.n_contexts, self.tokens_per_context = n_contexts, tokens_per_context
        self.buffer_contexts = min(buffer_contexts, n_contexts)
        self.start_batch = 0
        self.device = torch.device("cpu")
        self.rank, self.world = 0, 1

    def shard(self, rank: int, world: int) -> None:
        """Read only contexts `rank`, `rank + world`, ... (of the first multiple of `world`):
        DDP ranks see disjoint contexts, equally many, so they step together."""
        if self.n_contexts < world:
            raise UserError(
                f"{self.n_contexts} training contexts cannot be shared by {world} processes"
            )
        self.rank, self.world = rank, world
        self.n_contexts //= world
        self.buffer_contexts = min(self.buffer_contexts, self.n_contexts)

    def contexts(self, index: int) -> slice:
        """Positions, in the unsharded stream, of the `index`-th buffer's contexts."""
        start = (index * self.buffer_contexts) * self.world + self.rank
        count = min(self.buffer_contexts, self.n_contexts - index * self.buffer_contexts)
        return slice(start, start + count * self.world, self.world)

    def buffer(self, index: int) -> dict[str, Tensor]:
        """Activations of the `index`-th group of `buffer_contexts` contexts, in order."""
        raise NotImplementedError

    def buffer_batches(self) -> list[int]:
        """Number of batches drawn from each buffer (leftover tokens of a buffer are dropped)."""
        sizes = [
            min(self.buffer_contexts, self.n_contexts - start)
            for start in range(0, self.n_contexts, self.buffer_contexts)
        ]
        return [size * self.tokens_per_context // self.batch_size for size in sizes]

    def __len__(self) -> int:
        """All batches of the stream; a resumed one yields those from `start_batch` on."""
        return sum(self.buffer_batches())

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        skip = self.start_batch
        for index, n_batches in enumerate(self.buffer_batches()):
            if skip >= n_batches:
                skip -= n_batches
                continue
            buffer = self.buffer(index)
            n_tokens = len(next(iter(buffer.values())))
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            order = torch.randperm(n_tokens, generator=generator).to(self.device)
            for b in range(skip, n_batches):
                rows = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield {hook: acts[rows] for hook, acts in buffer.items()}
            skip = 0


class ModelActivations(BufferedStream):
    """Activations computed from `tokens` [n_contexts, n_ctx] by the model, as needed."""

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
        widths = {hook: model.width(hook) for hook in hooks}
        first = int(exclude_first)
        super().__init__(
            hooks, widths, len(tokens), tokens.shape[1] - first, batch_size, buffer_contexts, seed
        )
        self.model, self.forward_batch, self.first = model, forward_batch, first
        order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
        self.tokens = tokens[order]

    @torch.no_grad()
    def collect(self, contexts: Tensor) -> dict[str, Tensor]:
        """Activations at every hook for `contexts`, from one forward per chunk."""
        chunks: dict[str, list[Tensor]] = {hook: [] for hook in self.hooks}
        stop = max(self.hooks.values()) + 1
        for start in range(0, len(contexts), self.forward_batch):
            batch = contexts[start : start + self.forward_batch].to(self.device)
            acts, _ = self.model.capture(batch, self.hooks, stop, keep=self.evaluated)
            for hook, act in acts.items():
                chunks[hook].append(act)
        return {hook: torch.cat(parts) for hook, parts in chunks.items()}

    def evaluated(self, act: Tensor) -> Tensor:
        """[B, T, width] -> [B * (T - first), width]: the positions trained on, flattened."""
        return act[:, self.first :].reshape(-1, act.shape[-1])

    def buffer(self, index: int) -> dict[str, Tensor]:
        return self.collect(self.tokens[self.contexts(index)])

    def cache_bytes(self, dtype: str) -> int:
        rows = self.n_contexts * self.tokens_per_context
        return rows * sum(self.widths.values()) * np.dtype(dtype).itemsize

    def write_cache(self, directory: Path, metadata: dict, dtype: str = "float32") -> None:
        """Store every hook's activations for all contexts in stream order (`CachedActivations`).

        Arrays are written under temporary names and renamed; the manifest is written last, so a
        directory with a manifest is complete.
        """
        if self.world > 1:
            raise ValueError("write the activation cache from the unsharded stream")
        rows = self.n_contexts * self.tokens_per_context
        per_buffer = self.buffer_contexts * self.tokens_per_context
        n_buffers = -(-self.n_contexts // self.buffer_contexts)
        with ExitStack() as files:
            arrays = {
                hook: np.lib.format.open_memmap(
                    files.enter_context(atomic_path(directory / f"{hook}.npy")),
                    mode="w+",
                    dtype=dtype,
                    shape=(rows, self.widths[hook]),
                )
                for hook in self.hooks
            }
            for index in tqdm(range(n_buffers), desc="cache activations", unit="buffer"):
                for hook, acts in self.buffer(index).items():
                    start = index * per_buffer
                    arrays[hook][start : start + len(acts)] = acts.cpu().numpy()
            for array in arrays.values():
                array.flush()
        write_json(
            directory / MANIFEST,
            {
                "format": CACHE_FORMAT,
                "dtype": dtype,
                "n_contexts": self.n_contexts,
                "tokens_per_context": self.tokens_per_context,
                "hooks": self.widths,
                "seed": self.seed,
                **metadata,
            },
        )


class CachedActivations(BufferedStream):
    """The stream read back from a cache directory written by `ModelActivations.write_cache`.

    Format: `manifest.json` ({"format": "saelab-activations/1", "hooks": {hook: width},
    "n_contexts", "tokens_per_context", "dtype", "seed", and the model and data it came from})
    and one `<hook>.npy` per hook, [n_contexts * tokens_per_context, width], rows in stream
    order (contexts already shuffled by the seed). Memory-mapped: only a buffer is in memory.

    The cache must hold what `live` (the stream it stands in for) would compute, from the
    model and data of `origin`: every field that could differ is checked, so a cache of
    another model, data, context length, size or seed is refused, not trained on.
    """

    def __init__(self, directory: Path, live: BufferedStream, origin: dict[str, Any]) -> None:
        manifest = read_manifest(Path(directory))
        expected = {
            "format": CACHE_FORMAT,
            **origin,
            "tokens_per_context": live.tokens_per_context,
            "n_contexts": live.n_contexts,
            "seed": live.seed,
        }
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise UserError(
                    f"the activation cache {directory} was written for {key}="
                    f"{json.dumps(manifest.get(key))}, not {json.dumps(value)}: choose another "
                    "train.activation_cache directory, or delete this one to rewrite it"
                )
        widths = manifest.get("hooks") if isinstance(manifest.get("hooks"), dict) else {}
        if any(widths.get(hook) != width for hook, width in live.widths.items()):
            raise UserError(
                f"the activation cache {directory} holds hooks {sorted(widths)}, not all of "
                f"{sorted(live.widths)}: choose another train.activation_cache directory"
            )
        super().__init__(
            live.hooks, live.widths, live.n_contexts, live.tokens_per_context,
            live.batch_size, live.buffer_contexts, live.seed,
        )  # fmt: skip
        self.arrays = {}
        for hook, width in live.widths.items():
            path = Path(directory) / f"{hook}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise UserError(
                    f"{path} is truncated or corrupt ({first_line(error)}): delete "
                    f"{directory} to rewrite the cache"
                ) from None
            if array.shape != (self.n_contexts * self.tokens_per_context, width):
                raise UserError(
                    f"{path} has shape {array.shape}, not what its manifest says: delete "
                    f"{directory} to rewrite the cache"
                )
            self.arrays[hook] = array

    def buffer(self, index: int) -> dict[str, Tensor]:
        acts = {}
        for hook, array in self.arrays.items():
            width = array.shape[1]
            contexts = array.reshape(-1, self.tokens_per_context, width)[self.contexts(index)]
            acts[hook] = torch.from_numpy(np.array(contexts)).reshape(-1, width).float()
        return {hook: a.to(self.device) for hook, a in acts.items()}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise UserError(f"no complete activation cache in {directory} (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"{path} is truncated or corrupt ({first_line(error)}): delete {directory} to "
            "rewrite the cache"
        ) from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not an activation cache manifest: delete {directory}")
    return manifest
