"""The one download routine: URL -> temp file next to the target -> sha256 while streaming -> atomic rename.

Guarantees, whatever happens on the wire:

* the target path either does not exist or holds a complete file (never a partial one): bytes go to a
  uniquely named ``.part`` file in the same directory and are moved into place with ``os.replace`` only
  after the length and the hash were checked; on any error the ``.part`` file is deleted;
* a sha256 mismatch raises :class:`ChecksumError` and leaves nothing behind;
* a transfer that ends before ``Content-Length`` bytes raises :class:`IncompleteDownloadError`;
* concurrent callers (threads or processes) downloading the same target serialise on a file lock kept
  under ``<cache>/.locks``; the second one finds the finished file and does not download again;
* the bytes are what was asked for even without a sha256: an HTML page (captive portal, login or proxy error)
  is refused, a ``.json`` must parse and a ``.safetensors`` header must read before the file is moved into
  place (:func:`check_payload`); errors name the cache folder;
* ``.part`` files left by a killed download of the same target are swept; files keep the user's umask.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Mapping

from filelock import FileLock

from robaug._core.io import sha256_file  # re-exported: robaug.hub._download.sha256_file was public here

__all__ = [
    "download_file",
    "DownloadError",
    "ChecksumError",
    "IncompleteDownloadError",
    "RemoteFileNotFoundError",
    "UnsafeWeightsError",
    "InvalidFileError",
    "sha256_file",
    "check_payload",
    "adopt_file",
]

_CHUNK = 1 << 20
_USER_AGENT = "robaug-hub/0.1 (+python-urllib)"


class DownloadError(OSError):
    """A weights file could not be downloaded."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


class IncompleteDownloadError(DownloadError):
    """The server closed the connection before sending the whole file."""


class RemoteFileNotFoundError(DownloadError, FileNotFoundError):
    """The server answered 404 for the requested file."""


class InvalidFileError(DownloadError):
    """The bytes are not the file asked for (an HTML page, unparsable JSON, a broken safetensors header)."""


class UnsafeWeightsError(ValueError):
    """A pickle-based checkpoint was offered; robaug only loads safetensors."""


class _StripAuthOnHostChange(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub redirects LFS files to a CDN) without leaking the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib hook
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            for key in list(new.headers):
                if key.lower() == "authorization":
                    del new.headers[key]
            new.unredirected_hdrs.pop("Authorization", None)
        return new


def _open(url: str, headers: Mapping[str, str] | None, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    opener = urllib.request.build_opener(_StripAuthOnHostChange)
    return opener.open(request, timeout=timeout)


def _lock_path(dest: Path, lock_dir: Path | None) -> Path:
    if lock_dir is None:
        lock_dir = dest.parent / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:32]
    return lock_dir / f"{key}.lock"


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def check_payload(path: str | os.PathLike, name: str | None = None) -> None:
    """Raise :class:`InvalidFileError` unless ``path`` holds what its name promises: not an HTML page; a ``.json``
    that parses; a ``.safetensors`` whose 8-byte length, JSON header and tensor extents fit the file."""
    path = Path(path)
    name = name or path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
        if _looks_like_html(head) and not name.endswith((".html", ".htm")):
            raise InvalidFileError(f"an HTML page instead of {name} (a captive portal, login page or proxy error?)")
        if name.endswith(".json"):
            f.seek(0)
            try:
                json.loads(f.read().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise InvalidFileError(f"{name} is not valid JSON ({err})") from None
        elif name.endswith(".safetensors"):
            if size < 8:
                raise InvalidFileError(f"{name} is {size} bytes, too short for a safetensors file")
            (n,) = struct.unpack("<Q", head[:8])
            if n > size - 8 or n > 100_000_000:
                raise InvalidFileError(f"{name}: safetensors header length {n} does not fit a {size}-byte file")
            f.seek(8)
            try:
                header = json.loads(f.read(n).decode("utf-8"))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                raise InvalidFileError(f"{name}: unreadable safetensors header ({err})") from None
            if 8 + n + end != size:
                raise InvalidFileError(f"{name}: the safetensors header describes {8 + n + end} bytes, "
                                       f"the file has {size}")


def _sweep_parts(dest: Path) -> None:
    """Delete ``.part`` files of ``dest`` left by killed downloads (call with ``dest``'s lock held)."""
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            part.unlink()
        except FileNotFoundError:
            pass


def _fetch_to(url: str, tmp: Path, *, headers, timeout: float, progress: bool, desc: str) -> tuple[str, int]:
    """Stream ``url`` into ``tmp``; return (sha256 hex, number of bytes). Raises on HTTP errors and short reads."""
    from .._core.progress import progress_bar as tqdm  # whole lines in log files

    try:
        response = _open(url, headers, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise RemoteFileNotFoundError(f"{url} does not exist (HTTP 404)") from None
        if err.code in (401, 403):
            raise DownloadError(
                f"{url} refused access (HTTP {err.code}). If the file is private or gated, log in with "
                "`hf auth login` or set HF_TOKEN, and accept the model's terms on its Hub page."
            ) from None
        raise DownloadError(f"{url} failed with HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not reach {url}: {reason}. If this machine has no internet access, pre-download the weights "
            "elsewhere with `robaug download NAME --cache-dir DIR`, copy DIR here and set ROBAUG_CACHE=DIR and "
            "ROBAUG_OFFLINE=1 (see docs/weights.md)."
        ) from None

    digest = hashlib.sha256()
    received = 0
    with response:
        ctype = (response.headers.get("Content-Type") or "").lower()
        if ctype.startswith("text/html") and not desc.endswith((".html", ".htm")):
            raise InvalidFileError(
                f"{url} answered with an HTML page (Content-Type {ctype}) instead of {desc}: a captive portal, "
                "login page or proxy error? Nothing was cached.")  # download_file adds the cache folder
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        bar = tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                   disable=not progress, leave=False)
        try:
            with open(tmp, "wb") as out:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except http.client.IncompleteRead as err:
                        block = err.partial
                        if block:
                            out.write(block)
                            digest.update(block)
                            received += len(block)
                        raise IncompleteDownloadError(
                            f"the transfer of {url} was cut short after {received} of {expected} bytes"
                        ) from None
                    except OSError as err:  # connection reset, timeout, ...
                        raise IncompleteDownloadError(
                            f"the transfer of {url} broke off after {received} bytes: {err}"
                        ) from None
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
    if expected is not None and received != expected:
        raise IncompleteDownloadError(
            f"the transfer of {url} ended after {received} of {expected} bytes (Content-Length)"
        )
    return digest.hexdigest(), received


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    headers: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    lock_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given; return ``dest``.

    If ``dest`` already exists it is returned without any network access (unless ``force``), so a second
    call is free. ``lock_dir`` holds the inter-process lock files (default: ``dest.parent / ".locks"``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected_sha = sha256.lower() if sha256 else None
    lock = FileLock(str(_lock_path(dest, Path(lock_dir) if lock_dir is not None else None)))
    with lock:
        if dest.exists() and not force:
            return dest  # complete by construction: only os.replace ever creates it
        _sweep_parts(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            try:
                actual_sha, size = _fetch_to(url, tmp, headers=headers, timeout=timeout, progress=progress,
                                             desc=dest.name)
            except InvalidFileError as err:
                raise InvalidFileError(f"{err} (cache folder: {dest.parent})") from None
            if expected_sha is not None and actual_sha != expected_sha:
                raise ChecksumError(
                    f"sha256 mismatch for {url}: expected {expected_sha}, got {actual_sha} ({size} bytes). "
                    "The file was discarded; nothing was written to the cache. If the source changed on "
                    "purpose, update the registry entry's sha256."
                )
            try:
                check_payload(tmp, dest.name)
            except InvalidFileError as err:
                raise InvalidFileError(
                    f"{url} sent {err}. Nothing was written to the cache folder {dest.parent}; if an older "
                    f"robaug left a damaged file there, delete that folder and try again.") from None
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
    return dest


def adopt_file(src: str | os.PathLike, dest: str | os.PathLike, *, sha256: str | None = None,
               lock_dir: str | os.PathLike | None = None) -> Path | None:
    """Put an already-downloaded file (e.g. from the Hugging Face cache) at ``dest`` after checking it: its
    sha256 when given, else :func:`check_payload`. Hard-linked where possible (no second copy on disk), else
    copied atomically. Returns ``dest``, or ``None`` when ``src`` fails the check (the caller downloads)."""
    from .._core.io import atomic_path

    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(_lock_path(dest, Path(lock_dir) if lock_dir is not None else None))):
        if dest.exists():
            return dest
        try:
            if sha256 is not None:
                if sha256_file(src) != sha256.lower():
                    return None
            else:
                check_payload(src, dest.name)
        except (OSError, InvalidFileError):
            return None
        _sweep_parts(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:  # a hard link: no second copy on disk (the file keeps the mode huggingface_hub gave it)
            os.link(os.path.realpath(src), tmp)
            os.replace(tmp, dest)
            return dest
        except OSError:
            tmp.unlink(missing_ok=True)
        with atomic_path(dest) as part:  # another file system: copy, with the user's umask
            shutil.copyfile(src, part)
    return dest
