"""Every ```python snippet in README.md and docs/*.md runs as written.

The snippets of one file run in order in one namespace (like a reader pasting them into one notebook), in a temporary
folder, with a few stand-ins a reader would have at hand: ``model``/``classifier`` (a small Fashion-MNIST CNN), a
uint8 batch ``images``/``x`` with ``labels``/``y``, a ``loader`` of such batches, ``normalize``. On a machine without
CUDA, ``"cuda"`` in a snippet means the CPU. A snippet that needs files nobody has offline (CIFAR-10-C, a private
checkpoint) is preceded by ``<!-- snippet: skip (reason) -->``; README's snippets may never be skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?P<marker><!-- snippet: skip \((?P<reason>[^)]*)\) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def snippets(path: Path) -> list[tuple[int, str, str | None]]:
    text = path.read_text(encoding="utf-8")
    markers = text.count("<!-- snippet:")
    well_formed = len(re.findall(r"<!-- snippet: skip \([^)]*\) -->", text))
    assert markers == well_formed, f"{path.name}: a snippet marker is malformed (no ')' inside the reason)"
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
            for m in _BLOCK.finditer(text)]


def _namespace() -> dict:
    from robaug.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", 10, in_channels=1).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (8,), generator=g)
    return dict(model=model, classifier=model, images=images, labels=labels, x=images.float() / 255, y=labels.clone(),
                targets=labels.clone(), loader=[(images, labels)], normalize=lambda t: t, epochs=1)


def _runnable(code: str) -> str:
    if not torch.cuda.is_available():
        code = re.sub(r"""(["'])cuda\1""", r"\1cpu\1", code).replace(".cuda()", "")
    return code


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_snippets_run_as_written(path, tmp_path, monkeypatch):
    found = snippets(path)
    if not found:
        pytest.skip("no python snippets")
    monkeypatch.chdir(tmp_path)
    ns = _namespace()
    ran = 0
    for line, code, skip_reason in found:
        if skip_reason is not None:
            assert path.name != "README.md", f"README.md:{line}: README snippets must run"
            assert skip_reason.strip(), f"{path.name}:{line}: say why the snippet cannot run"
            continue
        try:
            exec(compile(_runnable(code), f"{path.name}:{line}", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - report which snippet failed and where
            pytest.fail(f"{path.name}:{line}: {type(e).__name__}: {e}")
        ran += 1
    assert ran, f"{path.name}: every snippet is skipped"
