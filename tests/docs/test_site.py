"""The documentation site builds in strict mode: a broken link, a missing page or a docstring that does not render
fails (needs the ``docs`` extra; skipped without it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the checkout (mkdocs.yml)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    for page in ("index.html", "api/robaug/index.html", "api/hub/index.html", "diffaug/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "robaug" / "index.html").read_text()
    assert 'id="robaug.DiffAug"' in api and 'id="robaug.IPMix"' in api  # docstrings were rendered
