"""The shard-dataset format: file names, the JSON manifest, and reading one shard.

Layout of a dataset folder::

    manifest.json                   what was generated and how (model, sampler settings, seeds, shard list)
    shards/shard-000000.safetensors "image" uint8 (N, H, W, C) or (N, C, H, W), "label" int64 (N,)
    shards/shard-000000.json        the shard's record (written after the shard; its presence = shard done)
    selection.safetensors           optional: "index" int64, the samples kept by confidence filtering

Shards hold no pickled objects (safetensors only). Every file is written atomically (:mod:`robaug._core.io`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors import safe_open

from ..._core.io import atomic_write_json, sha256_file

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "SELECTION_NAME", "SHARD_DIR", "LAYOUTS", "shard_name",
           "atomic_write_json", "load_manifest", "write_manifest", "read_shard", "open_shard", "verify_file"]

FORMAT = "robaug-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SELECTION_NAME = "selection.safetensors"
SHARD_DIR = "shards"
LAYOUTS = ("NHWC", "NCHW")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def load_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a robaug shard dataset (see robaug generate)")
    with open(path) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest (format={m.get('format')!r})")
    if int(m.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {m['version']} is newer than this robaug ({FORMAT_VERSION}); "
                         "upgrade robaug")
    return m


def write_manifest(root: str | os.PathLike, manifest: Mapping) -> None:
    atomic_write_json(Path(root) / MANIFEST_NAME, dict(manifest))


#: what to do about a damaged shard (every reader's error says it)
_FIX = ("regenerate it by rerunning the same `robaug generate` command (it re-checks every shard and rewrites "
        "damaged ones), or restore the file from a copy")


def verify_file(path: str | os.PathLike, sha256: str | None) -> None:
    """``ValueError`` naming ``path`` unless the file's sha256 is ``sha256`` (a manifest without a checksum for
    the file cannot be verified: that is an error too, so ``verify=True`` never passes silently)."""
    path = Path(path)
    if not sha256:
        raise ValueError(f"{path}: the manifest records no sha256 for this file, so it cannot be verified; "
                         "read it with verify=False")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard file missing; {_FIX}")
    got = sha256_file(path)
    if got != sha256:
        raise ValueError(f"{path}: sha256 mismatch (expected {sha256[:16]}..., got {got[:16]}...): the file is "
                         f"corrupted; {_FIX}")


def open_shard(path: str | os.PathLike):
    """``safetensors.safe_open`` of a shard, with an error that names the file and the fix when it is missing,
    truncated or not a safetensors file (safetensors' own message names neither)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard file missing; {_FIX}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors.SafetensorError (not exported everywhere) or an OSError
        raise ValueError(f"{path}: cannot read this shard ({err}); the file is truncated or corrupted: {_FIX}") from err


def read_shard(path: str | os.PathLike, sha256: str | None = None, *,
               verify: bool | None = None) -> dict[str, torch.Tensor]:
    """All arrays of one shard. With ``sha256`` (or ``verify=True``, which then needs ``sha256``) the file's checksum
    is checked first; a damaged file raises a ``ValueError`` naming it."""
    path = Path(path)
    if verify is None:
        verify = sha256 is not None
    if verify:
        verify_file(path, sha256)
    out = {}
    with open_shard(path) as f:
        try:
            for k in f.keys():
                out[k] = f.get_tensor(k)
        except Exception as err:
            raise ValueError(f"{path}: cannot read this shard ({err}); the file is corrupted: {_FIX}") from err
    return out


def check_complete(root: Path, m: Mapping) -> None:
    """``ValueError`` unless the manifest says every shard was written."""
    if not m.get("complete", False):
        raise ValueError(
            f"{root}: the dataset is incomplete ({len(m.get('shards', []))} of {m.get('num_shards')} shards recorded); "
            "rerun the same `robaug generate` command to finish it"
        )


def read_selection(root: Path, manifest: Mapping, subset: str) -> torch.Tensor | None:
    """The sample indices ``subset`` asks for (``None`` = every sample)."""
    if subset not in ("auto", "all", "selected"):
        raise ValueError(f"subset must be 'auto', 'all' or 'selected', got {subset!r}")
    sel = manifest.get("selection")
    if subset == "all" or (subset == "auto" and not sel):
        return None
    if not sel:
        raise ValueError(f"{root}: no selection in this dataset (it was generated without --keep-fraction)")
    return read_shard(root / sel["file"], sel.get("sha256"))["index"].long()


class ShardIndex:
    """Shard boundaries of a manifest: global sample index -> (shard, offset)."""

    def __init__(self, root: Path, manifest: Mapping) -> None:
        self.root = root
        self.shards = sorted(manifest["shards"], key=lambda s: s["start"])
        self.starts = np.array([s["start"] for s in self.shards], dtype=np.int64)
        self.counts = np.array([s["count"] for s in self.shards], dtype=np.int64)
        self.layout = manifest.get("layout", "NHWC")

    def locate(self, index: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        if k < 0 or index - self.starts[k] >= self.counts[k]:
            raise IndexError(f"sample {index} is in no shard")
        return k, int(index - self.starts[k])

    def path(self, k: int) -> Path:
        return self.root / self.shards[k]["file"]


def to_chw(img: torch.Tensor, layout: str) -> torch.Tensor:
    return img.permute(0, 3, 1, 2) if layout == "NHWC" else img
