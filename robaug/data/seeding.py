"""Deterministic seeds for every random draw of a training run.

Every random number a run uses is derived from ``(seed, purpose, step, ...)`` and nothing else, so a run
killed at any step and resumed from its checkpoint draws exactly the same numbers as an uninterrupted run,
and the per-sample draws do not depend on the number of DataLoader workers or DDP processes.
"""

from __future__ import annotations

import torch

__all__ = ["derive_seed", "PURPOSE", "make_generator"]

_MASK64 = (1 << 64) - 1

#: small integer tags that keep the streams of different purposes apart
PURPOSE = {"order": 1, "base": 2, "sample": 3, "device": 4, "global": 5, "eval": 6, "init": 7, "synthetic": 8}


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed mixing ``parts`` (ints, or keys of :data:`PURPOSE`) with splitmix64."""
    h = 0x243F6A8885A308D3
    for p in parts:
        v = PURPOSE[p] if isinstance(p, str) else int(p)
        h = _splitmix64(h ^ (v & _MASK64))
    return h & ((1 << 63) - 1)


def make_generator(device: torch.device | str, *parts: int | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(*parts)``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(derive_seed(*parts))
    return g
