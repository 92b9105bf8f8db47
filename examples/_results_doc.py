"""What the results scripts of examples/ share: the generated blocks of docs/results.md, mean ± sd over seeds and
the verdict on a claim from paired per-seed differences."""

from __future__ import annotations

import math
import statistics
from pathlib import Path


def replace_block(doc: Path, name: str, block: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``doc`` (appended at the end
    when the markers are missing; the file is written atomically with the user's umask)."""
    from robaug._core.io import atomic_write_bytes

    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = Path(doc)
    text = doc.read_text() if doc.is_file() else f"# Results\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip() + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(doc, f"{head}{begin}\n{block.strip()}\n{end}{tail}".encode())


def mean_sd(values, scale: float = 100.0, digits: int = 2) -> str:
    """``"m ± s"`` of ``scale * values`` (sample standard deviation; 0 for one value; ``n/a`` for none)."""
    vals = [scale * v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.{digits}f} ± {sd:.{digits}f}"


def verdict(diffs: list[float], sign: int = 1) -> str:
    """A claim judged on paired per-seed differences ``diffs`` (``sign`` -1 when the claim is a decrease):
    "held" when the mean is in the claimed direction by more than twice its standard error over seeds and every
    seed agrees, "opposite" when it is as clearly the other way, else "within noise"."""
    if not diffs:
        return "not measured"
    if len(diffs) < 2:
        return "one seed only"
    d = [sign * x for x in diffs]
    m, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    if m > 2 * se and all(x > 0 for x in d):
        return "held"
    if m < -2 * se and all(x < 0 for x in d):
        return "opposite"
    return "within noise"
