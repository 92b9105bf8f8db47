"""Random draws with an optional ``torch.Generator``: the one policy for the whole package.

A generator lives on one device; robaug draws *on the generator's device* (or, without a generator, from the global
RNG of the target device) and moves the result to the target device. The same seed therefore gives the same numbers
whatever device the data are on, and a CPU generator works with CUDA data.

Inside a DataLoader worker every worker holds a copy of the same generator, so drawing from it as is would give every
worker the same numbers. :func:`worker_generator` gives each worker a stream of its own instead, the way torch seeds
each worker's global RNG: on first use in a worker, a new generator seeded from the user generator's seed and the
worker's ``seed`` (``base_seed + worker_id``, where DataLoader draws ``base_seed`` afresh for every epoch from the
main process's RNG or from ``DataLoader(generator=...)``). So workers differ from each other, epochs differ, and a
run with workers is reproducible when the DataLoader is seeded (``torch.manual_seed`` or its ``generator=``), as
its shuffling already is. In the main process the generator is used as is.
"""

from __future__ import annotations

import math
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.utils.data

__all__ = ["draw_device", "rand", "randn", "randint", "random_bytes", "Rng", "check_generator",
           "worker_generator", "worker_seed"]


def check_generator(generator: object, owner: str = "generator") -> None:
    """``TypeError`` unless ``generator`` is ``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{owner} must be a torch.Generator or None, got {type(generator).__name__}")


def worker_seed(seed: int, worker_seed: int) -> int:
    """The seed of a worker's own stream: ``seed`` and the worker's DataLoader seed mixed by numpy's
    ``SeedSequence`` into 63 bits (distinct inputs give unrelated seeds)."""
    mixed = np.random.SeedSequence([int(seed) % 2**64, int(worker_seed) % 2**64]).generate_state(1, np.uint64)[0]
    return int(mixed) >> 1


#: Per worker process: user generator -> the worker's own generator derived from it.
_WORKER_STREAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def worker_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator to draw from: ``generator`` itself outside DataLoader workers (and ``None`` stays ``None``:
    the global RNG, which DataLoader already seeds per worker); inside a worker, one generator per worker and user
    generator, created on first use and seeded with :func:`worker_seed` of ``generator.initial_seed()`` and the
    worker's seed (see the module docstring). Costs one dictionary look-up per call in a worker."""
    if generator is None:
        return None
    info = torch.utils.data.get_worker_info()
    if info is None:
        return generator
    own = _WORKER_STREAMS.get(generator)
    if own is None or own[0] != info.seed:
        stream = torch.Generator(generator.device).manual_seed(worker_seed(generator.initial_seed(), info.seed))
        own = _WORKER_STREAMS[generator] = (info.seed, stream)
    return own[1]


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
