"""Class-balanced synthetic datasets from a robaug sampler: sharded, resumable, multi-process (the library behind
``robaug generate``; the command line lives in :mod:`robaug.cli.generate`).

Sample ``j`` of a run has class ``j % num_classes`` and seed ``seed * 2**32 + j``; shard ``k`` holds samples
``[k * shard_size, (k + 1) * shard_size)`` and is generated in batches that depend only on ``k`` and the batch
size. Rank ``r`` of ``W`` processes generates the shards ``k`` with ``k % W == r``. Hence a dataset does not
depend on the number of processes, and a killed run that is restarted with the same command skips the finished
shards and produces exactly the shards an uninterrupted run would (bit-identical on the same hardware and
software; see docs/generate.md). With ``keep_fraction`` every image also gets the confidence of a classifier in its
class, and the top fraction per class is recorded as the dataset's selection (DM-Improves-AT's 1M-of-5M filter).
The folder format (manifest, shards, records, selection) is :mod:`robaug.data.shards`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._core.io import sweep_temporaries
from .._core.modules import module_device
from .._core.progress import progress_bar
from ..data.shards.format import (
    FORMAT,
    FORMAT_VERSION,
    LAYOUTS,
    MANIFEST_NAME,
    SELECTION_NAME,
    SHARD_DIR,
    load_manifest,
    read_shard,
    write_manifest,
)
from ..data.shards.writer import (
    shard_file,
    shard_record_path,
    shard_state,
    write_selection,
    write_shard,
    write_shard_record,
)

__all__ = ["generate_dataset", "sample_seed"]

_SEED_SHIFT = 32
#: the lock a run holds on its output folder (a second run on the same folder waits or stops)
LOCK_NAME = ".robaug-generate.lock"


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` in a run with base ``seed``: ``seed * 2**32 + index``."""
    if not 0 <= index < (1 << _SEED_SHIFT):
        raise ValueError(f"sample index must lie in [0, 2**32), got {index}")
    if not 0 <= seed < (1 << 31):
        raise ValueError(f"seed must lie in [0, 2**31), got {seed}")
    return (int(seed) << _SEED_SHIFT) + int(index)


def _fingerprint(module: nn.Module | None) -> str | None:
    """sha256 over a module's state (names, dtypes, shapes, values), excluding online-trained contrastive heads."""
    if module is None:
        return None
    from ..diffusion.contrastive import EmbeddingHead

    skip = tuple(f"{name}." for name, m in module.named_modules() if isinstance(m, EmbeddingHead))
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if skip and k.startswith(skip):
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _plan_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


@torch.no_grad()
def _confidence(classifier: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor | None):
    x = images_u8.to(module_device(classifier, images_u8.device)).float().div(255.0)
    probs = F.softmax(classifier(x).float(), dim=1)
    if labels is None:
        conf, pred = probs.max(dim=1)
        return conf.cpu(), pred.cpu()
    return probs.gather(1, labels.to(probs.device).reshape(-1, 1)).squeeze(1).cpu(), labels


def generate_dataset(
    out_dir: str | os.PathLike,
    sampler: nn.Module,
    num_samples: int,
    *,
    shard_size: int = 10_000,
    batch_size: int = 256,
    seed: int = 0,
    num_classes: int | None = None,
    unconditional: bool = False,
    classes: Sequence[str] | None = None,
    layout: str = "NHWC",
    filter_classifier: nn.Module | None = None,
    keep_fraction: float | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool = True,
    lock_timeout: float = 0.0,
) -> dict:
    """Generate ``num_samples`` class-balanced images with ``sampler`` into shard folder ``out_dir``.

    ``sampler`` is a :class:`robaug.GuidedDiffusion` / :class:`robaug.ContrastiveGuidedSampler` (anything called as
    ``sampler(class_labels=..., seeds=...)`` returning ``[0, 1]`` images with a ``config()`` method). Under
    ``torch.distributed`` every rank calls this with the same arguments and generates its own shards.
    ``unconditional=True`` samples a class-conditional model without labels (its null label).
    ``filter_classifier`` + ``keep_fraction``: store each image's confidence in its class (unconditional runs:
    the classifier's predicted class becomes the label) and select the top fraction per class. Existing shards of
    the same run are kept (resume); a folder holding a different run raises unless ``overwrite``. Returns the
    final manifest.

    Resuming re-checks the shards it skips: their size always (free), their sha256 too with ``verify`` (default;
    hashing a 30 MB shard costs ~0.05 s, against minutes to generate it); a damaged shard is regenerated. One run
    at a time per folder: the run holds ``out_dir/.robaug-generate.lock`` and a second run waits ``lock_timeout``
    seconds (negative: forever) for it, then raises ``BlockingIOError``. Temporary files of a killed run are
    deleted at the start. A batch with NaN/inf values is never written (``ValueError`` naming the shard).
    """
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir {root} is a file, not a folder: choose another output folder (--out)")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    num_samples, shard_size, batch_size = int(num_samples), int(shard_size), int(batch_size)
    for name, v in (("num_samples", num_samples), ("shard_size", shard_size), ("batch_size", batch_size)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    sample_seed(int(seed), 0)  # checks the seed's range now, not at the first batch
    if num_samples > (1 << _SEED_SHIFT):
        raise ValueError("at most 2**32 samples per run (use another seed for more)")
    if (keep_fraction is None) != (filter_classifier is None):
        raise ValueError("confidence filtering needs both filter_classifier and keep_fraction")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:  # NaN fails too
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    denoiser = getattr(sampler, "denoiser", None)
    model_classes = getattr(denoiser, "num_classes", None)
    if unconditional:
        if num_classes is not None:
            raise ValueError("unconditional=True samples without classes: leave num_classes out")
        if filter_classifier is None:
            raise ValueError("unconditional=True needs filter_classifier (its prediction labels each image)")
        if model_classes is not None and getattr(denoiser, "null_label", None) is None:
            raise ValueError("unconditional=True: the model is class-conditional without a null label (it was not "
                             "trained with label dropout), so it cannot sample without a class")
    elif num_classes is None:
        num_classes = model_classes
    elif int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    elif model_classes is not None and int(num_classes) > model_classes:
        raise ValueError(f"num_classes={num_classes} but the model has {model_classes} classes: use num_classes <= "
                         f"{model_classes} (or leave it out to use the model's)")
    num_classes = None if num_classes is None else int(num_classes)
    from ..diffusion.guidance import ClassifierGuidance

    if num_classes is None and any(isinstance(t, ClassifierGuidance) for t in getattr(sampler, "terms", [])):
        raise ValueError("classifier guidance on an unconditional model: pass num_classes=... (the classifier's)")
    if filter_classifier is not None:
        filter_classifier.eval()
    rank, world = _dist()
    image_shape = list(sampler.image_shape()) if hasattr(sampler, "image_shape") else None
    num_shards = math.ceil(num_samples / shard_size)
    plan = {
        "format": FORMAT, "version": FORMAT_VERSION, "num_samples": num_samples, "shard_size": shard_size,
        "num_shards": num_shards, "batch_size": batch_size, "seed": int(seed),
        "sample_seed": "seed * 2**32 + index", "num_classes": num_classes,
        "labels": ("index % num_classes" if num_classes
                   else ("classifier prediction" if filter_classifier else "none (-1)")),
        "classes": list(classes) if classes is not None else None, "layout": layout, "image_shape": image_shape,
        "model": {"name": model_name, "fingerprint": _fingerprint(denoiser)},
        "sampler": sampler.config() if hasattr(sampler, "config") else {"type": type(sampler).__name__},
        "sampler_fingerprint": _fingerprint(sampler),
        "filter": None if filter_classifier is None else {
            "keep_fraction": float(keep_fraction), "classifier": type(filter_classifier).__name__,
            "fingerprint": _fingerprint(filter_classifier)},
    }

    lock = None
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        lock = _acquire(root, lock_timeout)
    try:
        if rank == 0:  # the lock holder is the only writer: every robaug temporary file here is a dead run's
            sweep_temporaries(root, older_than=0.0)
            sweep_temporaries(root / SHARD_DIR, older_than=0.0)
        return _run(root, plan, sampler, num_samples, shard_size, batch_size, seed, num_classes, layout,
                    filter_classifier, keep_fraction, overwrite, verify, progress, rank, world)
    finally:
        if lock is not None:
            lock.release()


def _acquire(root: Path, timeout: float):
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / LOCK_NAME))
    try:
        lock.acquire(timeout=float(timeout))
    except Timeout:
        raise BlockingIOError(
            f"another `robaug generate` is writing to {root} (it holds {root / LOCK_NAME}): wait for it to finish, "
            "or use another output folder; rerun the same command afterwards to resume or check the result"
        ) from None
    return lock


def _run(root: Path, plan: dict, sampler, num_samples: int, shard_size: int, batch_size: int, seed: int,
         num_classes: int | None, layout: str, filter_classifier, keep_fraction, overwrite: bool, verify: bool,
         progress: bool, rank: int, world: int) -> dict:
    num_shards = plan["num_shards"]
    # -- create or check the run (rank 0 first) ---------------------------------------------------------------
    manifest_path = root / MANIFEST_NAME
    if rank == 0:
        if manifest_path.is_file():
            old = load_manifest(root)
            old_plan = {k: old.get(k) for k in plan}
            diff = _plan_diff(plan, old_plan)
            if diff and not overwrite:
                raise ValueError(
                    f"{root} holds a different run (differs in: {', '.join(diff)}). Use the same settings to resume, "
                    "another --out, or --overwrite to delete it."
                )
            if diff:
                shutil.rmtree(root / SHARD_DIR, ignore_errors=True)
                (root / SELECTION_NAME).unlink(missing_ok=True)
                write_manifest(root, {**plan, "complete": False, "shards": [], "selection": None})
        else:
            root.mkdir(parents=True, exist_ok=True)
            write_manifest(root, {**plan, "complete": False, "shards": [], "selection": None})
        (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    _barrier()
    if rank != 0:
        diff = _plan_diff(plan, {k: load_manifest(root).get(k) for k in plan})
        if diff:
            raise RuntimeError(f"rank {rank}: settings differ from rank 0's in {diff}; "
                               "every rank needs the same arguments")

    # -- this rank's shards ---------------------------------------------------------------------------------
    todo = []
    for k in range(rank, num_shards, world):
        done, problem = shard_state(root, k, verify)
        if problem is not None:
            print(f"robaug generate: {problem}; generating shard {k} again", file=sys.stderr)
            shard_record_path(root, k).unlink(missing_ok=True)
        if not done:
            todo.append(k)
    if todo and load_manifest(root).get("complete"):  # a damaged shard of a finished run is being redone
        write_manifest(root, {**load_manifest(root), "complete": False})
    total = sum(min(shard_size, num_samples - k * shard_size) for k in todo)
    bar = None
    if progress and rank == 0 and total:
        bar = progress_bar(total=total, unit="img", desc=f"generate (rank 0 of {world})", smoothing=0.05)
    try:
        for k in todo:
            start = k * shard_size
            stop = min(start + shard_size, num_samples)
            imgs, labels, confs = [], [], []
            for b0 in range(start, stop, batch_size):
                idx = torch.arange(b0, min(b0 + batch_size, stop))
                lab = idx % num_classes if num_classes else None
                seeds = [sample_seed(seed, int(j)) for j in idx]
                x = sampler(class_labels=lab, seeds=seeds) if lab is not None else sampler(seeds=seeds)
                if not bool(torch.isfinite(x).all()):  # one sync per batch; NaN would become black pixels
                    raise ValueError(
                        f"shard {k} (samples {int(idx[0])}..{int(idx[-1])}): the sampler returned NaN/inf images, "
                        "nothing of this shard was written. Check the guidance settings (cfg_scale, classifier / "
                        "contrastive scale), try state_dtype float64 or model_dtype float32, then rerun to resume")
                u8 = x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
                if filter_classifier is not None:
                    conf, lab = _confidence(filter_classifier, u8, lab)
                    confs.append(conf.float())
                imgs.append(u8.cpu())
                labels.append(lab.long().cpu() if lab is not None else torch.full((len(idx),), -1, dtype=torch.long))
                if bar is not None:
                    bar.update(len(idx))
            images = torch.cat(imgs)
            if layout == "NHWC":
                images = images.permute(0, 2, 3, 1)
            lab_all = torch.cat(labels)
            extra = {"confidence": torch.cat(confs)} if confs else {}
            rel = shard_file(k)
            sha = write_shard(root / rel, images.contiguous(), lab_all, **extra)
            counts = (torch.bincount(lab_all.clamp(min=0), minlength=num_classes or 0).tolist()
                      if (lab_all >= 0).any() else [])
            write_shard_record(root, k, {
                "index": k, "file": rel, "start": start, "count": stop - start, "bytes": (root / rel).stat().st_size,
                "seed_start": sample_seed(seed, start), "sha256": sha, "class_counts": counts})
    finally:
        if bar is not None:
            bar.close()

    # -- finalise (rank 0): manifest with every shard, optional selection -------------------------------------
    _barrier()
    if rank == 0:
        missing = [k for k in range(num_shards) if not shard_record_path(root, k).is_file()]
        if missing:
            raise RuntimeError(f"{len(missing)} shard(s) missing after generation (e.g. {missing[:5]}); "
                               "rerun to finish")
        shards = [json.loads(shard_record_path(root, k).read_text()) for k in range(num_shards)]
        selection = None
        if filter_classifier is not None:
            selection = _select(root, shards, float(keep_fraction))
        write_manifest(root, {**plan, "complete": True, "shards": shards, "selection": selection})
    _barrier()
    return load_manifest(root)


def _select(root: Path, shards: list[dict], keep_fraction: float) -> dict:
    """Top ``keep_fraction`` per class by stored confidence (ties: lower index first)."""
    confs, labels = [], []
    for rec in shards:
        d = read_shard(root / rec["file"])
        confs.append(d["confidence"].double())
        labels.append(d["label"])
    conf, lab = torch.cat(confs), torch.cat(labels)
    keep = []
    for c in torch.unique(lab).tolist():
        idx = torch.nonzero(lab == c).squeeze(1)
        n_keep = int(round(keep_fraction * idx.numel()))
        order = torch.sort(-conf[idx], stable=True).indices
        keep.append(idx[order[:n_keep]])
    index = torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.long)
    return write_selection(root, index, keep_fraction=keep_fraction)
