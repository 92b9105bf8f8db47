"""Pretrained denoisers: a registry of safetensors weights, lazily downloaded, verified and cached.

    >>> from robaug.hub import load_denoiser, list_pretrained
    >>> D = load_denoiser("fmnist-ddpm")               # shipped with robaug, no download
    >>> D = load_denoiser("google/ddpm-cifar10-32")    # first call downloads 143 MB, later calls are offline
    >>> D = load_denoiser("path/to/diffusers/model")   # a local folder or .safetensors file always works
    >>> D = load_denoiser("adm-imagenet-256-uncond")   # after `robaug convert` (the error says the command)

The first use of a remote entry downloads its files (progress bar), checks their sha256 and moves them
into the cache atomically; later uses read the cache without touching the network. ``local_files_only=True``
or ``ROBAUG_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` forbid downloads; pre-download with ``robaug download NAME``
(or ``python -m robaug.hub download NAME``). Weights are only ever read with safetensors: nothing
downloaded is unpickled. See docs/weights.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ._converted import (
    ConversionRequiredError,
    build_converted,
    conversion_help,
    converted_cache_dir,
    converted_folder,
    load_classifier,
)
from ._download import (
    ChecksumError,
    DownloadError,
    IncompleteDownloadError,
    RemoteFileNotFoundError,
    UnsafeWeightsError,
    download_file,
)
from ._env import resolve_cache_dir
from ._fetch import OfflineCacheMissError, fetch_entry, fetch_hub_file
from .registry import (
    FMNIST_DDPM_SHA256,
    WeightFile,
    WeightsEntry,
    get_entry,
    list_pretrained,
    register_weights,
)

if TYPE_CHECKING:  # torch / diffusers are imported only when a model is built (keeps `robaug download` light)
    import torch

    from robaug.diffusion import DiffusersDenoiser

    from ._build import ModelSpec

__all__ = [
    "load_denoiser",
    "load_classifier",
    "ConversionRequiredError",
    "list_pretrained",
    "download_weights",
    "get_entry",
    "register_weights",
    "WeightsEntry",
    "WeightFile",
    "resolve_cache_dir",
    "main_download",
    "download_file",
    "DownloadError",
    "ChecksumError",
    "IncompleteDownloadError",
    "RemoteFileNotFoundError",
    "OfflineCacheMissError",
    "UnsafeWeightsError",
    "FMNIST_DDPM_SHA256",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def _entry_spec(entry: WeightsEntry, paths: dict[str, Path]) -> "ModelSpec":
    from ._build import ModelSpec, read_robaug_json

    weights_file = entry.weights_file
    sha = weights_file.sha256
    cfg = entry.config_file
    data = read_robaug_json(paths[cfg.filename]) if cfg is not None else {}
    if entry.source == "package" and sha is None:
        sha = data.get("sha256")  # recorded at export time; catches a corrupted installation
    unet = entry.unet_config if entry.unet_config is not None else data["unet"]
    sched = entry.scheduler_config if entry.scheduler_config is not None else data.get("scheduler")
    null_label = entry.null_label if entry.null_label is not None else data.get("null_label")
    # remote files were verified while downloading; re-hash only the small shipped ones
    return ModelSpec(
        weights=paths[weights_file.filename],
        unet_config=unet,
        scheduler_config=sched or {},
        null_label=null_label,
        sha256=sha if entry.source == "package" else None,
        origin=f"{entry.name} ({paths[weights_file.filename]})",
        num_classes=entry.num_classes if entry.num_classes is not None else data.get("num_classes"),
    )


def _hub_repo_files(repo_id: str, revision: str, cache_dir, local_files_only: bool, progress: bool) -> Path:
    """Fetch a diffusers UNet2DModel repo that is not in the registry; return its snapshot folder."""
    def get(name: str, optional: bool = False) -> Path | None:
        try:
            return fetch_hub_file(repo_id, revision, name, cache_dir=cache_dir, local_files_only=local_files_only,
                                  progress=progress)
        except (RemoteFileNotFoundError, OfflineCacheMissError):
            if optional:
                return None
            raise

    from ._fetch import hub_cache_path

    snapshot = hub_cache_path(resolve_cache_dir(cache_dir), repo_id, revision, "x").parent
    marker = snapshot / ".robaug-complete"
    if marker.is_file():  # fetched completely before: no network at all (each file's content re-checked)
        from ._fetch import check_cached

        for f in snapshot.rglob("*"):
            if f.is_file() and f.suffix in (".json", ".safetensors"):
                check_cached(f, snapshot)
        return snapshot
    try:
        get("config.json")
        sub = ""
    except RemoteFileNotFoundError:
        get("unet/config.json")  # a pipeline repo: unet/ + scheduler/
        sub = "unet/"
    except OfflineCacheMissError as first:
        try:
            get("unet/config.json")
            sub = "unet/"
        except OfflineCacheMissError:
            raise first from None
    try:
        get(f"{sub}diffusion_pytorch_model.safetensors")
    except RemoteFileNotFoundError:
        raise RemoteFileNotFoundError(
            f"the Hub repo {repo_id} at revision {revision!r} has no {sub}diffusion_pytorch_model.safetensors. "
            "robaug loads only safetensors (never pickled .bin files); see docs/weights.md for converting a "
            "checkpoint you trust into a local folder."
        ) from None
    if sub:
        get("scheduler/scheduler_config.json", optional=True)
    else:
        get("scheduler_config.json", optional=True) or get("scheduler/scheduler_config.json", optional=True)
    marker.write_text(f"{repo_id}@{revision}\n")
    return snapshot


def _converted_for(name_or_path, cache_dir) -> tuple[Path, dict] | None:
    """``(folder, config)`` of a ``robaug convert`` output: a local folder, or a ``source="convert"`` registry
    entry's ``<cache>/converted/<name>`` (ConversionRequiredError with the command when it is not there)."""
    if isinstance(name_or_path, os.PathLike) or (isinstance(name_or_path, str) and os.path.exists(name_or_path)):
        return converted_folder(name_or_path)
    if not isinstance(name_or_path, str):
        return None
    try:
        entry = get_entry(name_or_path)
    except KeyError:
        return None
    if entry.source != "convert":
        return None
    found = converted_folder(converted_cache_dir(entry.name, cache_dir))
    if found is None:
        raise ConversionRequiredError(conversion_help(entry, cache_dir))
    return found


def _resolve(name_or_path, revision, cache_dir, local_files_only, progress) -> "ModelSpec":
    from ._build import resolve_local

    if isinstance(name_or_path, os.PathLike) or (isinstance(name_or_path, str) and os.path.exists(name_or_path)):
        return resolve_local(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"expected a registry name, a Hub repo id or a local path, got {type(name_or_path).__name__}")
    name = name_or_path
    try:
        entry = get_entry(name)
    except KeyError:
        entry = None
    if entry is not None:
        if revision is not None:
            entry = entry.with_revision(revision)
        paths = fetch_entry(entry, cache_dir=cache_dir, local_files_only=local_files_only, progress=progress)
        return _entry_spec(entry, paths)
    if _is_hub_id(name):
        try:
            folder = _hub_repo_files(name, revision or "main", cache_dir, local_files_only, progress)
        except (DownloadError, OfflineCacheMissError) as err:
            note = (f"{name!r} is not a registered name ({', '.join(list_pretrained())}) and no such local path "
                    "exists, so it was tried as a Hugging Face Hub repo id:\n")
            raise type(err)(note + str(err)) from None
        return resolve_local(folder)
    raise ValueError(
        f"{name!r} is neither a registered weights name, a Hugging Face Hub repo id (owner/name) nor an existing "
        f"path. Registered: {', '.join(list_pretrained())}"
    )


def load_denoiser(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    null_label: int | None = None,
    progress: bool = True,
) -> "DiffusersDenoiser":
    """Build a pretrained denoiser ``D(x, sigma, class_labels=None) -> x0_hat``.

    Args:
        name_or_path: a registry name (see :func:`list_pretrained`), any Hub repo id holding a diffusers
            ``UNet2DModel`` in safetensors, a local ``.safetensors`` file with its ``.json`` config, a
            diffusers model / pipeline folder, or a folder written by ``robaug convert`` (ADM / EDM).
        revision: Hub revision to use instead of the registry's pinned one (its sha256 then no longer applies).
        cache_dir: download cache (default ``$ROBAUG_CACHE`` or ``~/.cache/robaug``).
        local_files_only: never download; fail with instructions when a file is not cached.
        device, dtype: where and in which dtype the UNet lives (default CPU, float32).
        null_label: override the "no class" label of a class-conditional model.
        progress: show a progress bar while downloading.
    """
    from ._build import build_denoiser

    found = _converted_for(name_or_path, cache_dir)
    if found is not None:
        return build_converted(*found, device=device, dtype=dtype)
    spec = _resolve(name_or_path, revision, cache_dir, local_files_only, progress)
    return build_denoiser(spec, device=device, dtype=dtype, null_label=null_label)


def download_weights(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Path]:
    """Fetch the files of a registry entry (or a Hub repo id) into the cache without building the model.

    For offline clusters: run this (or ``robaug download NAME``) where there is internet, then copy the cache
    directory. Returns ``{filename: local path}``. ``force=True`` downloads again even if cached.
    """
    try:
        entry = get_entry(name)
    except KeyError:
        entry = None
    if entry is not None and entry.source == "convert":
        raise ConversionRequiredError(conversion_help(entry, cache_dir))
    if entry is not None:
        if revision is not None:
            entry = entry.with_revision(revision)
        return fetch_entry(entry, cache_dir=cache_dir, local_files_only=False, progress=progress, force=force)
    if _is_hub_id(name):
        if force:
            raise ValueError("force=True is supported for registry entries only; delete the cache folder instead")
        folder = _hub_repo_files(name, revision or "main", cache_dir, False, progress)
        return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}
    raise ValueError(f"{name!r} is neither a registered weights name nor a Hub repo id. "
                     f"Registered: {', '.join(list_pretrained())}")


def main_download(argv: list[str] | None = None) -> int:
    """``robaug download NAME [NAME ...] [--cache-dir DIR] [--revision REV] [--force]`` / ``--list``."""
    from ._cli import main

    return main(argv)
