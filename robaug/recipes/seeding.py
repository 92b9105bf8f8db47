"""Moved to :mod:`robaug.data.seeding`; this path keeps working."""

from robaug.data.seeding import PURPOSE, derive_seed, make_generator

__all__ = ["derive_seed", "PURPOSE", "make_generator"]
