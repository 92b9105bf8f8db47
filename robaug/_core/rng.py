"""Random draws with an optional ``torch.Generator``: the one policy for the whole package.

A generator lives on one device; robaug draws *on the generator's device* (or, without a generator, from the global
RNG of the target device) and moves the result to the target device. The same seed therefore gives the same numbers
whatever device the data are on, and a CPU generator works with CUDA data.

Inside a DataLoader worker every worker holds a copy of the same generator, so drawing from it as is would give every
worker the same numbers. :func:`worker_generator` handles that the way torch handles each worker's global RNG, which
DataLoader re-seeds in every worker: a generator that is still the copy the worker received (same state as when it was
forked or unpickled) is re-seeded once, on first use in the worker, from its own seed and the worker's ``seed``
(``base_seed + worker_id``, where DataLoader draws ``base_seed`` afresh for every epoch from the main process's RNG or
from ``DataLoader(generator=...)``). So workers differ from each other, epochs differ, and a run with workers is
reproducible when the DataLoader is seeded (``torch.manual_seed`` or its ``generator=``), as its shuffling already is.
A generator the worker's own code seeds (e.g. ``manual_seed(sample_seed)`` before each call, for per-sample
reproducibility) or creates is used as is, and so is every generator in the main process. Only CPU generators are
tracked (CUDA cannot be used in forked workers).
"""

from __future__ import annotations

import math
import os
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.utils.data

__all__ = ["draw_device", "rand", "randn", "randint", "random_bytes", "Rng", "check_generator",
           "worker_generator", "worker_seed", "track", "GeneratorMixin"]


def check_generator(generator: object, owner: str = "generator") -> None:
    """``TypeError`` unless ``generator`` is ``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{owner} must be a torch.Generator or None, got {type(generator).__name__}")


def worker_seed(seed: int, worker_seed: int) -> int:
    """The seed of a worker's own stream: ``seed`` and the worker's DataLoader seed mixed by numpy's
    ``SeedSequence`` into 63 bits (distinct inputs give unrelated seeds)."""
    mixed = np.random.SeedSequence([int(seed) % 2**64, int(worker_seed) % 2**64]).generate_state(1, np.uint64)[0]
    return int(mixed) >> 1


#: Generators held by robaug modules (see :class:`GeneratorMixin`): their state is recorded in forked children.
_TRACKED: weakref.WeakSet = weakref.WeakSet()
#: Per process: generator -> its state when this process received it (forked or unpickled), until its first use.
_COPIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _record(generator: torch.Generator) -> None:
    if generator.device.type == "cpu":
        _COPIED[generator] = generator.get_state()


def _record_tracked_after_fork() -> None:
    _COPIED.clear()
    for g in list(_TRACKED):
        _record(g)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_record_tracked_after_fork)


def track(generator: torch.Generator | None, *, copied: bool = False) -> None:
    """Register a generator a module draws from, so that forked DataLoader workers recognise their copy of it;
    ``copied=True`` when it has just been unpickled (spawned workers): record its state as received."""
    if generator is None:
        return
    _TRACKED.add(generator)
    if copied:
        _record(generator)


def worker_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator to draw from, after giving it a stream of its own in a DataLoader worker (module docstring):
    ``generator`` itself, re-seeded in place with :func:`worker_seed` of ``generator.initial_seed()`` and the worker's
    seed on its first use in a worker while it still holds the state the worker received. ``None`` stays ``None``
    (the global RNG, which DataLoader already seeds per worker). After the first use: one dictionary look-up."""
    if generator is None:
        return None
    info = torch.utils.data.get_worker_info()
    if info is None:
        return generator
    received = _COPIED.pop(generator, None)
    if received is not None and torch.equal(generator.get_state(), received):
        generator.manual_seed(worker_seed(generator.initial_seed(), info.seed))
    return generator


class GeneratorMixin:
    """For ``nn.Module`` s with a ``generator`` attribute: checked when set and tracked for DataLoader workers
    (:func:`worker_generator`); draw from ``worker_generator(self.generator)``."""

    _generator: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator | None:
        return self._generator

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        check_generator(generator, f"{type(self).__name__}: generator")
        track(generator)
        self._generator = generator

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        track(self._generator, copied=True)


def draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    """Where the numbers are drawn: the generator's device, else ``device`` (its global RNG)."""
    return generator.device if generator is not None else torch.device(device)


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``U[0, 1)`` of ``shape`` drawn in float32 on :func:`draw_device`, returned on ``device`` in ``dtype``."""
    u = torch.rand(tuple(shape), generator=generator, device=draw_device(generator, device), dtype=torch.float32)
    return u.to(device=device, dtype=dtype, non_blocking=True)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``N(0, 1)`` of ``shape`` drawn in float32 on :func:`draw_device`, returned on ``device`` in ``dtype``."""
    n = torch.randn(tuple(shape), generator=generator, device=draw_device(generator, device), dtype=torch.float32)
    return n.to(device=device, dtype=dtype, non_blocking=True)


def randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers in ``[low, high)`` (int64) drawn on :func:`draw_device`, returned on ``device``."""
    i = torch.randint(low, high, tuple(shape), generator=generator, device=draw_device(generator, device))
    return i.to(device, non_blocking=True)


def random_bytes(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Uniform uint8 of ``shape`` (~10x faster than ``torch.rand`` on CPU): int64 words uniform over all 64 bits
    (``random_()`` without bounds would leave the top bit 0), read as bytes. Drawn on :func:`draw_device`."""
    numel = math.prod(shape)
    words = torch.empty((numel + 7) // 8, dtype=torch.int64, device=draw_device(generator, device))
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    return words.view(torch.uint8)[:numel].view(tuple(shape)).to(device, non_blocking=True)


class Rng:
    """The draws of one call bound to ``(device, generator)``: ``rng.rand(4, 3)``, ``rng.randn(...)``, ..."""

    def __init__(self, device: torch.device | str, generator: torch.Generator | None) -> None:
        self.device = torch.device(device)
        self.generator = generator

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return rand(shape, self.generator, self.device, dtype)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return randn(shape, self.generator, self.device, dtype)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        return randint(low, high, shape, self.generator, self.device)

    def bytes(self, *shape: int) -> torch.Tensor:
        return random_bytes(shape, self.generator, self.device)
