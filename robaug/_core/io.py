"""Files written so that a crash never leaves half a file and colleagues can read them: one atomic write
(unique temporary name in the target folder, fsync, the user's umask, ``os.replace``), sha256 of a file, and
sweeping temporary files a killed process left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["sha256_file", "default_file_mode", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "atomic_save", "sweep_temporaries", "TMP_MARK"]

#: Every temporary file robaug writes has this in its name (``.<name>.<random>.robaug-tmp``), so a sweep finds them.
TMP_MARK = ".robaug-tmp"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, the file written there gets the
    user's umask mode, is fsync'ed and replaces ``path`` atomically. On error the temporary file is removed.

    The temporary name keeps ``path``'s suffix (``np.savez`` and ``torch.save`` look at it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}{TMP_MARK}{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        os.chmod(tmp, default_file_mode())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON (the encoding of manifests, shard records and model configs), written
    atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def atomic_save(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_name)`` (e.g. ``lambda f: torch.save(obj, f)`` or safetensors' ``save_file``) and move the
    result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def sweep_temporaries(folder: str | os.PathLike, *, older_than: float = 3600.0, recursive: bool = False) -> int:
    """Delete robaug temporary files (:data:`TMP_MARK`) in ``folder`` untouched for ``older_than`` seconds (a live
    writer touches its file continuously); returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    removed = 0
    for p in folder.rglob(f"*{TMP_MARK}*") if recursive else folder.glob(f"*{TMP_MARK}*"):
        with contextlib.suppress(OSError):
            if p.is_file() and now - p.stat().st_mtime >= older_than:
                p.unlink()
                removed += 1
    return removed
