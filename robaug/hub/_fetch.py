"""Map registry entries and Hub files to paths in the cache, downloading what is missing (unless offline).

Cache layout (``<cache>`` = ``cache_dir`` > ``$ROBAUG_CACHE`` > ``~/.cache/robaug``)::

    <cache>/hub/<org>--<repo>/<revision>/<path in repo>     Hugging Face Hub files
    <cache>/url/<first 16 hex of sha256(url)>/<filename>    files from plain URLs
    <cache>/.locks/                                         inter-process lock files

A file is in the cache only when it is complete (see ``_download``), so a cache hit needs no network; a
cached file without a known sha256 is re-checked cheaply on every hit (JSON parses, safetensors header fits)
so that a damaged file left by an older version fails with the folder to delete. Hub files that
``huggingface_hub`` / diffusers already downloaded (``HF_HUB_CACHE`` / ``HF_HOME``) are reused (hard-linked)
after their sha256 (or, without one, their content) was checked, even offline.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from importlib import resources
from pathlib import Path

from ._download import (
    DownloadError,
    InvalidFileError,
    RemoteFileNotFoundError,
    adopt_file,
    check_payload,
    download_file,
)
from ._env import hf_endpoint, hf_hub_cache, hf_token, offline_reason, resolve_cache_dir
from .registry import WeightFile, WeightsEntry

__all__ = [
    "OfflineCacheMissError",
    "CorruptCacheError",
    "check_cached",
    "from_hf_cache",
    "hub_url",
    "hub_cache_path",
    "url_cache_path",
    "package_path",
    "fetch_entry",
    "fetch_hub_file",
    "entry_file_url",
]


class OfflineCacheMissError(FileNotFoundError):
    """Downloads are disabled and the needed file is not in the cache."""


class CorruptCacheError(DownloadError):
    """A cached file is damaged (left by an older robaug or changed by hand); the message names the folder."""


def check_cached(path: Path, folder: Path) -> Path:
    """``path`` if its content is what its name promises (see ``check_payload``), else CorruptCacheError."""
    try:
        check_payload(path)
    except InvalidFileError as err:
        raise CorruptCacheError(
            f"the cached file {path} is damaged: {err}. Delete the cache folder {folder} (rm -r '{folder}') and "
            "load again to download it anew.") from None
    return path


def from_hf_cache(repo_id: str, revision: str, filename: str) -> Path | None:
    """The file in the Hugging Face Hub cache (``hf_hub_cache()``) at ``revision``, if huggingface_hub has it."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_hub_cache()), revision=revision)
    except Exception:  # a malformed cache or repo id must not break robaug's own download
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _hub_folder(cache: Path, repo_id: str, revision: str) -> Path:
    return hub_cache_path(cache, repo_id, revision, "x").parent


def hub_url(repo_id: str, revision: str, filename: str) -> str:
    """``{HF_ENDPOINT}/{repo}/resolve/{revision}/{filename}`` (revision URL-quoted, e.g. refs/pr/3)."""
    rev = urllib.parse.quote(revision, safe="")
    path = urllib.parse.quote(filename, safe="/")
    return f"{hf_endpoint()}/{repo_id}/resolve/{rev}/{path}"


def _safe_part(text: str) -> str:
    return text.replace("/", "--").replace("\\", "--").replace(":", "_")


def hub_cache_path(cache: Path, repo_id: str, revision: str, filename: str) -> Path:
    """Where a Hub file lives in the cache."""
    return cache / "hub" / _safe_part(repo_id) / _safe_part(revision) / Path(*filename.split("/"))


def url_cache_path(cache: Path, url: str, filename: str) -> Path:
    """Where a file fetched from a plain URL lives in the cache."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache / "url" / key / Path(filename).name


def package_path(filename: str) -> Path:
    """Path of a file shipped in ``robaug/weights/``."""
    return Path(str(resources.files("robaug") / "weights" / filename))


def entry_file_url(entry: WeightsEntry, f: WeightFile) -> str:
    """The URL a registry file is fetched from."""
    if entry.source == "hub":
        return hub_url(entry.repo_id, entry.revision, f.filename)
    if entry.source == "url":
        return f.url
    raise ValueError(f"entry {entry.name!r} ships with the package; it has no download URL")


def _entry_cache_path(entry: WeightsEntry, f: WeightFile, cache: Path) -> Path:
    if entry.source == "hub":
        return hub_cache_path(cache, entry.repo_id, entry.revision, f.filename)
    return url_cache_path(cache, f.url, f.filename)


def _offline_message(what: str, reason: str, cache: Path, missing: list[tuple[Path, str]]) -> str:
    lines = [
        f"robaug: the weights {what!r} are not in the cache and downloads are disabled ({reason}).",
        f"Cache directory: {cache}",
        "Missing file(s):",
        *(f"    {p}" for p, _ in missing),
        "",
        "To pre-download them, on a machine with internet access run",
        f"    robaug download {what} --cache-dir /path/to/robaug-cache",
        f"(or: python -m robaug.hub download {what} --cache-dir /path/to/robaug-cache), copy that directory",
        "here and point robaug at it with ROBAUG_CACHE=/path/to/robaug-cache (or cache_dir=...).",
        "Or fetch each file yourself and put it at the path above:",
        *(f"    curl -L --create-dirs -o '{p}' '{u}'" for p, u in missing),
    ]
    return "\n".join(lines)


def _hub_headers(url: str) -> dict[str, str]:
    token = hf_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_entry(
    entry: WeightsEntry,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Path]:
    """Local paths of all files of ``entry`` (``{filename: path}``), downloading missing ones."""
    if entry.source == "package":
        paths = {f.filename: package_path(f.filename) for f in entry.files}
        for f, p in zip(entry.files, paths.values()):
            if not p.is_file():
                raise FileNotFoundError(
                    f"the built-in weights file {p} is missing from this robaug installation; reinstall robaug "
                    "(the wheel ships robaug/weights/*.safetensors and *.json as package data)"
                )
        return paths

    cache = resolve_cache_dir(cache_dir)
    paths = {f.filename: _entry_cache_path(entry, f, cache) for f in entry.files}
    for f in entry.files:
        p = paths[f.filename]
        if not force and p.is_file() and f.sha256 is None:
            check_cached(p, _hub_folder(cache, entry.repo_id, entry.revision) if entry.source == "hub" else p.parent)
        if not force and not p.is_file() and entry.source == "hub":
            hf = from_hf_cache(entry.repo_id, entry.revision, f.filename)
            if hf is not None:
                adopt_file(hf, p, sha256=f.sha256, lock_dir=cache / ".locks")
    missing = [f for f in entry.files if force or not paths[f.filename].is_file()]
    if not missing:
        return paths
    reason = offline_reason(local_files_only)
    if reason is not None:
        raise OfflineCacheMissError(_offline_message(
            entry.name, reason, cache, [(paths[f.filename], entry_file_url(entry, f)) for f in missing]))
    for f in missing:
        url = entry_file_url(entry, f)
        headers = _hub_headers(url) if entry.source == "hub" else {}
        try:
            download_file(url, paths[f.filename], sha256=f.sha256, headers=headers, progress=progress,
                          lock_dir=cache / ".locks", force=force)
        except RemoteFileNotFoundError as err:
            hint = ""
            if entry.source == "hub" and f.filename.endswith(".safetensors"):
                hint = (f" The repo {entry.repo_id} at revision {entry.revision!r} does not publish "
                        f"{f.filename}. robaug loads only safetensors (never pickled .bin files); see "
                        "docs/weights.md for converting a .bin checkpoint you trust into a local folder.")
            raise RemoteFileNotFoundError(f"{err}.{hint}") from None
    return paths


def fetch_hub_file(
    repo_id: str,
    revision: str,
    filename: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    sha256: str | None = None,
    progress: bool = True,
    what: str | None = None,
) -> Path:
    """One file of a Hub repo, from the cache or downloaded into it."""
    cache = resolve_cache_dir(cache_dir)
    path = hub_cache_path(cache, repo_id, revision, filename)
    if path.is_file():
        return path if sha256 else check_cached(path, _hub_folder(cache, repo_id, revision))
    hf = from_hf_cache(repo_id, revision, filename)
    if hf is not None and adopt_file(hf, path, sha256=sha256, lock_dir=cache / ".locks") is not None:
        return path
    reason = offline_reason(local_files_only)
    url = hub_url(repo_id, revision, filename)
    if reason is not None:
        raise OfflineCacheMissError(_offline_message(what or repo_id, reason, cache, [(path, url)]))
    return download_file(url, path, sha256=sha256, headers=_hub_headers(url), progress=progress,
                         lock_dir=cache / ".locks")
