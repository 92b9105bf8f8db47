"""The public API changes only on purpose: it must equal tests/fixtures/public_api.txt (regenerate with
``python tests/public_api.py`` and commit the diff when a change is intended)."""

from __future__ import annotations

import difflib

from public_api import MODULES, SNAPSHOT, render


def test_public_api_matches_snapshot():
    now = render()
    recorded = SNAPSHOT.read_text()
    diff = "\n".join(difflib.unified_diff(recorded.splitlines(), now.splitlines(), "recorded", "now", lineterm=""))
    assert now == recorded, f"the public API changed; if on purpose run `python tests/public_api.py`:\n{diff[:4000]}"


def test_every_public_module_has_all():
    import importlib

    for name in MODULES:
        mod = importlib.import_module(name)
        assert getattr(mod, "__all__", None), f"{name} has no __all__"
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"{name}.__all__ lists names it does not have: {missing}"
