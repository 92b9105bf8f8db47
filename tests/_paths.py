"""Where things are, for tests that run against a checkout (editable install) or an installed wheel (CI).

``SOURCE_ROOT``: the checkout (README, docs/, examples/). ``PACKAGE_DIR``: the robaug package the tests import — the
checkout's ``robaug/`` in development, ``site-packages/robaug`` when CI tests the built wheel. Subprocesses get
:func:`subprocess_env`, so they import that same robaug (never the checkout behind the wheel's back) and the tests'
helper modules.
"""

from __future__ import annotations

import os
from pathlib import Path

import robaug

TESTS = Path(__file__).resolve().parent
SOURCE_ROOT = TESTS.parent
PACKAGE_DIR = Path(robaug.__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
#: NVIDIA EDM reference outputs and real-format snapshot pickles (../shared/fixtures/edm; see its README)
EDM_CONFIGS = ["vp-ddpmpp-cond", "ve-ncsnpp-uncond", "edm-adm-cond"]


def edm_fixture_dir() -> Path | None:
    """``$ROBAUG_EDM_FIXTURES`` or ``../shared/fixtures/edm`` beside the checkout, if present."""
    env = os.environ.get("ROBAUG_EDM_FIXTURES")
    cand = Path(env) if env else SOURCE_ROOT.parent / "shared" / "fixtures" / "edm"
    return cand if (cand / "index.json").is_file() else None


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: one thread, the tests folder and robaug's own location importable."""
    env = dict(os.environ)
    path = [str(TESTS), str(PACKAGE_DIR.parent)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1", **extra)
    return env
