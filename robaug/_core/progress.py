"""Progress bars that read well both in a terminal and in a log file.

On a terminal this is tqdm. When stderr is not a terminal (CI, ``nohup``, a Kaggle log, ``2> file``) tqdm's
carriage-return frames would pile up into one huge line, so the bar writes whole lines instead: at most one every
``log_interval`` seconds (10 s) or every 10% of the total, plus the final state. ``ROBAUG_QUIET=1`` (what the CLI's
``--quiet`` sets) silences every bar.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tqdm import tqdm as _tqdm

__all__ = ["progress_bar", "quiet", "LineTqdm"]


def quiet() -> bool:
    """Whether progress output is switched off (``ROBAUG_QUIET`` set to a non-empty value other than ``0``)."""
    return os.environ.get("ROBAUG_QUIET", "") not in ("", "0")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineTqdm(_tqdm):
    """tqdm that prints one complete line per update, rate-limited by time and by fraction done."""

    def __init__(self, *args: Any, log_interval: float = 10.0, log_fraction: float = 0.1, **kwargs: Any) -> None:
        self._log_interval = float(log_interval)
        self._log_fraction = float(log_fraction)
        self._last_line_t = -float("inf")
        self._last_line_n: float | None = None
        kwargs.setdefault("mininterval", 0.0)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # noqa: D401 - tqdm hook
        if self.disable:
            return True
        now = time.monotonic()
        n = self.n
        done = self.total is not None and n >= self.total
        step = (self._log_fraction * self.total) if self.total else None
        due_time = now - self._last_line_t >= self._log_interval
        due_frac = step is not None and (self._last_line_n is None or n - self._last_line_n >= step)
        if not (due_time or due_frac or done) or n == self._last_line_n:
            return True
        self._last_line_t, self._last_line_n = now, n
        line = (msg if msg is not None else self.__str__()).strip("\r\n")
        self.fp.write(line + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and self.n != self._last_line_n:
            self._last_line_t = -float("inf")
            self.display()
        self.sp = None  # the last line is already written: tqdm must not add a clearing frame
        super().close()


def progress_bar(*args: Any, disable: bool = False, file: Any = None, **kwargs: Any) -> _tqdm:
    """A tqdm bar (``tqdm(iterable, total=..., desc=...)`` arguments) that writes log lines when ``file`` (stderr by
    default) is not a terminal and is silent under ``ROBAUG_QUIET``."""
    stream = sys.stderr if file is None else file
    disable = bool(disable) or quiet()
    if _is_terminal(stream):
        return _tqdm(*args, disable=disable, file=stream, **kwargs)
    return LineTqdm(*args, disable=disable, file=stream, **kwargs)
