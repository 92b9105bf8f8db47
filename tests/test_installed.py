"""Under scripts/test.sh after a wheel install (CI), the tests exercise the installed package, not the checkout:
a file missing from the wheel then fails the tests instead of being found in the source tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from _paths import PACKAGE_DIR, SOURCE_ROOT

import robaug


@pytest.mark.skipif(os.environ.get("ROBAUG_EXPECT_INSTALLED") != "1", reason="not running against a wheel install")
def test_robaug_is_imported_from_the_installed_wheel():
    assert PACKAGE_DIR != SOURCE_ROOT / "robaug", f"robaug was imported from the checkout: {robaug.__file__}"
    assert PACKAGE_DIR.parent.name == "site-packages", f"robaug is not an installed package: {robaug.__file__}"
    assert Path(sys.prefix) in PACKAGE_DIR.parents, f"robaug is not in this environment: {robaug.__file__}"
    from importlib.metadata import distribution

    files = {str(f) for f in distribution("robaug").files or ()}
    assert "robaug/weights/fmnist-ddpm.safetensors" in files and "robaug/py.typed" in files
    assert robaug.__version__ == distribution("robaug").version
