"""What users install: the wheel and sdist built from this checkout hold what they must and nothing else.

The build tests copy the checkout's files (tracked and untracked-but-not-ignored, as git sees them) to a temporary
folder and build there with setuptools' own PEP 517 hooks (no network, no build isolation), so stale ``build/``
folders in the checkout cannot leak into the wheel and the checkout stays clean.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


# ------------------------------------------------------------------------------------------------------------
# Fast checks on the source tree


def test_version_has_one_source():
    import robaug

    assert robaug.__version__ == VERSION, "robaug.__version__ must come from the package metadata (pyproject)"


def test_license_and_typing_files_are_declared():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert set(project["license-files"]) >= {"LICENSE", "NOTICE"}
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["robaug"]
    assert (ROOT / "robaug" / "py.typed").is_file()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    notice = (ROOT / "NOTICE").read_text()
    assert "Fashion-MNIST" in notice and "fmnist-ddpm" in notice
    for arxiv in ("2306.09192", "2310.04780", "2302.04638", "2210.09643"):  # the four papers
        assert arxiv in notice
        assert arxiv in (ROOT / "CITATION.cff").read_text()
        assert arxiv in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------------------------------------------------
# Builds (slow: three setuptools builds and one install, ~30 s)


def _checkout_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        return [p for p in out.split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but build outputs
        skip = {".git", ".venv", "build", "dist", "site", "__pycache__", ".pytest_cache"}
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)]


def _hook(hook: str, src: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 ``hook`` (build_sdist / build_wheel) in ``src``; return the file it made."""
    code = f"import sys, setuptools.build_meta as m; print(m.{hook}(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return out / res.stdout.strip().splitlines()[-1]


def _digests(whl: Path) -> dict[str, str]:
    with zipfile.ZipFile(whl) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building needs setuptools >= 77 (license-files), found {setuptools.__version__}")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    for rel in _checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp / "dist"
    dist.mkdir()
    sdist = _hook("build_sdist", src, dist)
    wheel = _hook("build_wheel", src, dist)
    with tarfile.open(sdist) as t:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
        t.extractall(tmp / "unpacked", **safe)
    from_sdist = tmp / "from_sdist"
    from_sdist.mkdir()
    wheel2 = _hook("build_wheel", tmp / "unpacked" / f"robaug-{VERSION}", from_sdist)
    return {"tmp": tmp, "src": src, "sdist": sdist, "wheel": wheel, "wheel_from_sdist": wheel2}


@pytest.mark.slow
def test_wheel_holds_the_package_and_nothing_else(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    info = f"robaug-{VERSION}.dist-info"
    src = built["src"]
    must = {"robaug/py.typed", "robaug/weights/fmnist-ddpm.safetensors", "robaug/weights/fmnist-ddpm.json",
            f"{info}/licenses/LICENSE", f"{info}/licenses/NOTICE", f"{info}/METADATA", f"{info}/entry_points.txt",
            "robaug/_core/__init__.py", "robaug/_core/rng.py", "robaug/_core/io.py"}
    assert must <= names, sorted(must - names)
    # every module and subpackage of the checkout, and no other Python file
    source_py = {p.relative_to(src).as_posix() for p in (src / "robaug").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == source_py
    subpackages = {p.parent.relative_to(src).as_posix() for p in (src / "robaug").rglob("__init__.py")}
    assert {"robaug", "robaug/_core", "robaug/hub", "robaug/eval", "robaug/transforms"} <= subpackages
    # nothing but the package and its metadata: no tests, fixtures, notebooks, examples, ../shared, caches
    for n in names:
        assert n.startswith(("robaug/", f"{info}/")), n
        assert not any(bad in n for bad in ("tests/", "fixtures", ".ipynb", "shared/", "__pycache__", ".pyc",
                                            "egg-info", "examples/", "benchmarks/")), n
    with zipfile.ZipFile(built["wheel"]) as z:
        assert z.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        meta = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        weights = z.read("robaug/weights/fmnist-ddpm.safetensors")
    assert f"Version: {VERSION}\n" in meta
    assert "License-Expression: Apache-2.0\n" in meta and "License-File: LICENSE\n" in meta
    for name, target in PYPROJECT["project"]["scripts"].items():
        assert f"{name} = {target}" in entry_points
    assert len(weights) > 1_000_000  # the real weights, not a Git LFS pointer


@pytest.mark.slow
def test_wheel_built_from_the_sdist_is_the_same(built):
    assert _digests(built["wheel_from_sdist"]) == _digests(built["wheel"])


@pytest.mark.slow
def test_sdist_holds_sources_licence_and_tests_but_no_notebooks(built):
    prefix = f"robaug-{VERSION}/"
    with tarfile.open(built["sdist"]) as t:
        names = {n[len(prefix):] for n in t.getnames() if n.startswith(prefix)}
    assert {"LICENSE", "NOTICE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml",
            "robaug/py.typed", "robaug/weights/fmnist-ddpm.safetensors", "tests/conftest.py"} <= names
    assert not any(n.startswith(("examples/", "benchmarks/", "docs/", "scripts/", "site/", ".ci/")) for n in names)
    assert not any(".ipynb" in n or "shared/" in n or "__pycache__" in n for n in names)


@pytest.mark.slow
def test_twine_accepts_both(built):
    pytest.importorskip("twine")
    res = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(built["sdist"]),
                          str(built["wheel"])], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_installed_wheel_works_outside_the_checkout(built):
    site = built["tmp"] / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                          "--disable-pip-version-check", "--target", str(site), str(built["wheel"])],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    probe = textwrap.dedent("""
        import hashlib, importlib.metadata, importlib.resources
        import robaug
        from robaug.hub import FMNIST_DDPM_SHA256
        weights = importlib.resources.files("robaug") / "weights" / "fmnist-ddpm.safetensors"
        print(robaug.__file__)
        print(robaug.__version__, importlib.metadata.version("robaug"))
        print(hashlib.sha256(weights.read_bytes()).hexdigest() == FMNIST_DDPM_SHA256)
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", probe], cwd=built["tmp"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    file, versions, weights_ok = res.stdout.strip().splitlines()[-3:]
    assert Path(file).is_relative_to(site)
    assert versions == f"{VERSION} {VERSION}"
    assert weights_ok == "True"
