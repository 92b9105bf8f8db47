"""Progress bars write whole, rate-limited lines into files and normal tqdm frames on terminals."""

from __future__ import annotations

import io

from robaug._core import progress
from robaug._core.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_file_output_is_a_few_whole_lines():
    buf = io.StringIO()
    for _ in progress_bar(range(1000), file=buf, desc="work"):
        pass
    text = buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 2 <= len(lines) <= 12  # start, every 10%, end
    assert "1000/1000" in lines[-1] and all(line.startswith("work") for line in lines)


def test_unknown_total_is_limited_by_time(monkeypatch):
    clock = iter(float(t) for t in range(0, 100000, 3))  # each update 3 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    buf = io.StringIO()
    bar = progress_bar(file=buf, desc="open-ended", mininterval=0, miniters=1)
    for _ in range(20):
        bar.update(1)
    bar.close()
    n = len(buf.getvalue().splitlines())
    assert 5 <= n <= 9  # about one line per 10 s of the 60 s, plus the last


def test_quiet_env_silences(monkeypatch):
    monkeypatch.setenv("ROBAUG_QUIET", "1")
    buf = io.StringIO()
    for _ in progress_bar(range(10), file=buf):
        pass
    assert buf.getvalue() == ""


def test_terminal_gets_tqdm_frames():
    buf = _Terminal()
    for _ in progress_bar(range(10), file=buf, mininterval=0):
        pass
    assert "\r" in buf.getvalue()
