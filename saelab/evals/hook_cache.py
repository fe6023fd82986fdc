"""What the probing plugins share across the SAEs at a hook: a task's activations there (one
forward per batch of task inputs, stopped after the hooked block) and the fits on them that
do not depend on the SAE. Every SAE at that hook in a sweep, and every validation of a
training run, reuses them instead of running the model again."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=Sized)


class HookCache:
    """In-memory entries keyed by (model, key), at most `max_bytes` in all, least recently used
    out first. An entry holds a weak reference to its model: a later model that Python gives
    the same `id` misses."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple, tuple[weakref.ref, Any]] = OrderedDict()

    def get(self, model: Any, key: Hashable, make: Callable[[], T], max_bytes: float) -> T:
        """The entry of `model` and `key`: cached, or `make()` now (and kept if it fits)."""
        full_key = (id(model), key)
        found = self.entries.get(full_key)
        if found is not None and found[0]() is model:
            self.entries.move_to_end(full_key)
            return found[1]
        value = make()
        self.entries[full_key] = (weakref.ref(model), value)
        while self.entries and sum(v.nbytes for _, v in self.entries.values()) > max_bytes:
            self.entries.popitem(last=False)  # the least recently used first (maybe this one)
        return value

    def clear(self) -> None:
        self.entries.clear()
