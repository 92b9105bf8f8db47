"""Sharded synthetic datasets: fixed-size safetensors shards + a JSON manifest; and DM-Improves-AT's npz format.

Layout of a dataset folder::

    manifest.json                   what was generated and how (model, sampler settings, seeds, shard list)
    shards/shard-000000.safetensors "image" uint8 (N, H, W, C) or (N, C, H, W), "label" int64 (N,)
    shards/shard-000000.json        the shard's record (written after the shard; its presence = shard done)
    selection.safetensors           optional: "index" int64, the samples kept by confidence filtering

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a killed writer
never leaves a truncated shard behind. Shards hold no pickled objects (safetensors only) and are read either
sample by sample without loading whole shards (:class:`ShardDataset`, memory-mapped) or streamed shard by shard
(:class:`ShardStream`, for DataLoader workers and DDP ranks).

The DM-Improves-AT releases (Wang et al. 2023) are single ``np.savez`` files with ``image`` (uint8 NHWC) and
``label``; :func:`read_npz` / :func:`write_npz` read and write them, :func:`npz_to_shards` and
:func:`shards_to_npz` convert.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch.utils.data import Dataset, IterableDataset, get_worker_info

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "LAYOUTS",
    "sha256_file",
    "atomic_write_bytes",
    "atomic_write_json",
    "write_shard",
    "read_shard",
    "shard_name",
    "load_manifest",
    "write_manifest",
    "ShardDataset",
    "ShardStream",
    "load_shards",
    "read_npz",
    "write_npz",
    "npz_to_shards",
    "shards_to_npz",
]

FORMAT = "robaug-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SELECTION_NAME = "selection.safetensors"
SHARD_DIR = "shards"
LAYOUTS = ("NHWC", "NCHW")


# ------------------------------------------------------------------------------------------------------------
# atomic files


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; the final file gets the user's umask like open()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


# ------------------------------------------------------------------------------------------------------------
# shards


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def _as_tensor(a: Any, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    return t.detach().cpu().contiguous()


def write_shard(path: str | os.PathLike, images: Any, labels: Any, **extra: Any) -> str:
    """Atomically write one shard (``images`` uint8 4-d, ``labels`` int64 1-d, extra float/int arrays of the
    same length) and return its sha256. The bytes depend only on the arrays (no metadata), so the same
    content always gives the same file and checksum."""
    img = _as_tensor(images, torch.uint8, "images")
    lab = _as_tensor(labels, torch.int64, "labels")
    if img.ndim != 4 or lab.ndim != 1 or img.shape[0] != lab.shape[0]:
        raise ValueError(f"images must be (N, ., ., .) and labels (N,), got {tuple(img.shape)} and {tuple(lab.shape)}")
    tensors = {"image": img, "label": lab}
    for k, v in extra.items():
        t = torch.as_tensor(v).detach().cpu().contiguous()
        if t.shape[:1] != lab.shape:
            raise ValueError(f"extra array {k!r} must have {lab.shape[0]} entries, got shape {tuple(t.shape)}")
        tensors[k] = t
    data = st_save(tensors)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_shard(path: str | os.PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """All arrays of one shard; with ``sha256`` the file is verified first."""
    path = Path(path)
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise ValueError(f"{path}: sha256 mismatch (expected {sha256}, got {got}); the shard is corrupted")
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


# ------------------------------------------------------------------------------------------------------------
# manifests


def load_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a robaug shard dataset (see robaug generate)")
    with open(path) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest (format={m.get('format')!r})")
    if int(m.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {m['version']} is newer than this robaug ({FORMAT_VERSION}); upgrade robaug")
    return m


def write_manifest(root: str | os.PathLike, manifest: Mapping) -> None:
    atomic_write_json(Path(root) / MANIFEST_NAME, dict(manifest))


def _selection(root: Path, manifest: Mapping, subset: str) -> torch.Tensor | None:
    if subset not in ("auto", "all", "selected"):
        raise ValueError(f"subset must be 'auto', 'all' or 'selected', got {subset!r}")
    sel = manifest.get("selection")
    if subset == "all" or (subset == "auto" and not sel):
        return None
    if not sel:
        raise ValueError(f"{root}: no selection in this dataset (it was generated without --keep-fraction)")
    return read_shard(root / sel["file"], sel.get("sha256"))["index"].long()


def _check_complete(root: Path, m: Mapping) -> None:
    if not m.get("complete", False):
        raise ValueError(
            f"{root}: the dataset is incomplete ({len(m.get('shards', []))} of {m.get('num_shards')} shards recorded); "
            "rerun the same `robaug generate` command to finish it"
        )


class _ShardIndex:
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


def _to_chw(img: torch.Tensor, layout: str) -> torch.Tensor:
    return img.permute(0, 3, 1, 2) if layout == "NHWC" else img


class ShardDataset(Dataset):
    """Map-style dataset over a shard folder: ``ds[i] -> (image, label)`` with ``image`` a uint8 ``(C, H, W)``
    tensor (passed through ``transform``). Samples are read one at a time from memory-mapped shards, so the
    dataset never holds more than the requested images in RAM.

    ``subset``: ``"auto"`` (the confidence-filtered selection when the dataset has one, else everything),
    ``"all"`` or ``"selected"``. ``verify=True`` checks every shard's sha256 on first open.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        subset: str = "auto",
        verify: bool = False,
        max_open_shards: int = 32,
    ) -> None:
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        _check_complete(self.root, self.manifest)
        self._index = _ShardIndex(self.root, self.manifest)
        self.selection = _selection(self.root, self.manifest, subset)
        self.transform, self.target_transform = transform, target_transform
        self.verify = verify
        self.max_open_shards = max(1, int(max_open_shards))
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._verified: set[int] = set()
        self.classes = self.manifest.get("classes")
        self.num_classes = self.manifest.get("num_classes")

    def __len__(self) -> int:
        return int(self.selection.shape[0]) if self.selection is not None else int(self._index.counts.sum())

    def __getstate__(self) -> dict:  # DataLoader workers open their own handles
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    def _handle(self, k: int):
        h = self._handles.get(k)
        if h is None:
            path = self._index.path(k)
            if self.verify and k not in self._verified:
                want = self._index.shards[k].get("sha256")
                if want and sha256_file(path) != want:
                    raise ValueError(f"{path}: sha256 mismatch; the shard is corrupted")
                self._verified.add(k)
            h = safe_open(str(path), framework="pt")
            self._handles[k] = h
            while len(self._handles) > self.max_open_shards:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(k)
        return h

    def global_index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        return int(self.selection[i]) if self.selection is not None else i

    def __getitem__(self, i: int):
        k, off = self._index.locate(self.global_index(i))
        h = self._handle(k)
        img = _to_chw(h.get_slice("image")[off: off + 1], self._index.layout)[0]
        label = int(h.get_slice("label")[off: off + 1][0])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label


class ShardStream(IterableDataset):
    """Stream a shard folder one shard at a time: yields ``(image uint8 (C, H, W), label)``.

    Shards are split over DDP ranks (``rank``/``world_size``, default from ``torch.distributed`` when
    initialised) and DataLoader workers; with ``shuffle`` the shard order and the samples inside each shard are
    permuted from ``seed + epoch`` (call :meth:`set_epoch` each epoch). Memory: one shard at a time per worker.
    Ranks may receive a different number of samples when the shards do not split evenly; use
    ``drop_uneven=True`` to give every rank the same number of shards.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        *,
        subset: str = "auto",
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_uneven: bool = False,
        verify: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        _check_complete(self.root, self.manifest)
        self._index = _ShardIndex(self.root, self.manifest)
        self.selection = _selection(self.root, self.manifest, subset)
        self.transform, self.target_transform = transform, target_transform
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        if rank is None or world_size is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world_size = 0, 1
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_uneven = bool(drop_uneven)
        self.verify = verify

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank_shards(self) -> list[int]:
        n = len(self._index.shards)
        order = list(range(n))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        if self.drop_uneven:
            order = order[: n - n % self.world_size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator:
        shards = self._rank_shards()
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id:: info.num_workers]
        layout = self._index.layout
        for k in shards:
            rec = self._index.shards[k]
            data = read_shard(self._index.path(k), rec.get("sha256") if self.verify else None)
            imgs, labels = _to_chw(data["image"], layout), data["label"]
            idx = torch.arange(imgs.shape[0])
            if self.selection is not None:
                start = int(rec["start"])
                lo = int(torch.searchsorted(self.selection, torch.tensor(start)))
                hi = int(torch.searchsorted(self.selection, torch.tensor(start + imgs.shape[0])))
                idx = self.selection[lo:hi] - start
            if self.shuffle:
                g = torch.Generator().manual_seed((self.seed + self.epoch) * 1_000_003 + k)
                idx = idx[torch.randperm(idx.shape[0], generator=g)]
            for j in idx.tolist():
                img, label = imgs[j], int(labels[j])
                if self.transform is not None:
                    img = self.transform(img)
                if self.target_transform is not None:
                    label = self.target_transform(label)
                yield img, label


def load_shards(root: str | os.PathLike, *, subset: str = "auto", layout: str = "NCHW") -> tuple[torch.Tensor, torch.Tensor]:
    """Load a (small) shard dataset into memory: ``(images uint8 (N, C, H, W) or NHWC, labels int64)``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    m = load_manifest(root)
    _check_complete(root, m)
    index = _ShardIndex(root, m)
    imgs, labels = [], []
    for k, rec in enumerate(index.shards):
        d = read_shard(index.path(k))
        imgs.append(d["image"])
        labels.append(d["label"])
    x, y = torch.cat(imgs), torch.cat(labels)
    sel = _selection(root, m, subset)
    if sel is not None:
        x, y = x[sel], y[sel]
    if index.layout != layout:
        x = x.permute(0, 3, 1, 2) if layout == "NCHW" else x.permute(0, 2, 3, 1)
    return x.contiguous(), y


# ------------------------------------------------------------------------------------------------------------
# DM-Improves-AT's single-file np.savez format


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a DM-Improves-AT ``.npz`` (``image`` uint8 ``(N, H, W, C)``, ``label``); never unpickles."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in ("image", "label") if k not in f.files]
        if missing:
            raise KeyError(f"{path}: missing array(s) {missing}; a DM-Improves-AT file holds 'image' and 'label' "
                           f"(found {f.files})")
        images, labels = f["image"], f["label"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: 'image' must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{path}: 'label' must have shape ({images.shape[0]},), got {labels.shape}")
    return images, labels.astype(np.int64, copy=False)


def write_npz(path: str | os.PathLike, images: Any, labels: Any, *, layout: str = "NHWC") -> None:
    """Write the DM-Improves-AT format (``np.savez`` with ``image`` uint8 NHWC and ``label`` int64), atomically.
    ``images`` in ``layout`` (``"NCHW"`` input is transposed to NHWC)."""
    img = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if img.dtype != np.uint8 or img.ndim != 4:
        raise ValueError(f"images must be uint8 4-d, got {img.dtype} {img.shape}")
    if layout == "NCHW":
        img = img.transpose(0, 2, 3, 1)
    elif layout != "NHWC":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the file name must end in .npz (np.savez appends it otherwise)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, image=np.ascontiguousarray(img), label=lab.astype(np.int64))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def npz_to_shards(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 10_000,
    num_classes: int | None = None,
    source: str | None = None,
) -> dict:
    """Convert a DM-Improves-AT ``.npz`` into a shard folder (NHWC shards) and return its manifest."""
    images, labels = read_npz(path)
    out = Path(out_dir)
    n = images.shape[0]
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = []
    for k, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        rel = f"{SHARD_DIR}/{shard_name(k)}.safetensors"
        sha = write_shard(out / rel, images[start:stop], labels[start:stop])
        shards.append({"index": k, "file": rel, "start": start, "count": stop - start, "sha256": sha})
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "complete": True, "num_samples": n, "shard_size": shard_size,
        "num_shards": len(shards), "image_shape": [int(images.shape[3]), int(images.shape[1]), int(images.shape[2])],
        "layout": "NHWC", "num_classes": num_classes, "source": source or f"npz:{Path(path).name}",
        "shards": shards, "selection": None,
    }
    write_manifest(out, manifest)
    return manifest


def shards_to_npz(root: str | os.PathLike, path: str | os.PathLike, *, subset: str = "auto") -> None:
    """Write a shard folder as one DM-Improves-AT ``.npz`` (loads everything into RAM, as that format does)."""
    x, y = load_shards(root, subset=subset, layout="NHWC")
    write_npz(path, x, y, layout="NHWC")
