"""The public API as text: every name in the ``__all__`` lists of robaug's public modules with its signature.

``python tests/public_api.py`` rewrites tests/fixtures/public_api.txt; ``tests/test_public_api.py`` fails when the
API differs from that file, so any change to the public API shows up in review as a diff of it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parent / "fixtures" / "public_api.txt"
MODULES = ["robaug", "robaug.transforms", "robaug.diffusion", "robaug.diffusion.nets", "robaug.losses", "robaug.hub",
           "robaug.data", "robaug.eval", "robaug.models", "robaug.recipes"]


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def describe(obj) -> list[str]:
    if inspect.isclass(obj):
        lines = [f"class {_signature(obj)}"]
        for name, member in sorted(vars(obj).items()):
            if name.startswith("_") or not (inspect.isfunction(member)
                                            or isinstance(member, (classmethod, staticmethod))):
                continue
            fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            lines.append(f"  .{name}{_signature(fn)}")
        return lines
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return [f"def {_signature(obj)}"]
    if inspect.ismodule(obj):
        return ["module"]
    return [type(obj).__name__]


def render() -> str:
    out = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        out.append(f"[{modname}]")
        for name in sorted(getattr(mod, "__all__", [])):
            lines = describe(getattr(mod, name))
            out.append(f"{name}: {lines[0]}")
            out.extend(lines[1:])
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    SNAPSHOT.write_text(render())
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
