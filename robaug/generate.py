"""Write class-balanced synthetic datasets with a robaug sampler: sharded, resumable, multi-process.

    robaug generate --model fmnist-ddpm --out data/fmnist-syn --num-samples 100000 --steps 18 --cfg-scale 1.5
    torchrun --nproc_per_node 8 -m robaug.generate --model ... --out ... --num-samples 20000000 --device cuda

Sample ``j`` of a run has class ``j % num_classes`` and seed ``seed * 2**32 + j``; shard ``k`` holds samples
``[k * shard_size, (k + 1) * shard_size)`` and is generated in batches that depend only on ``k`` and the batch
size. Rank ``r`` of ``W`` processes generates the shards ``k`` with ``k % W == r``. Hence a dataset does not
depend on the number of processes, and a killed run that is restarted with the same command skips the finished
shards and produces exactly the shards an uninterrupted run would (bit-identical on the same hardware and
software; see docs/generate.md). With ``keep_fraction`` every image also gets the confidence of a classifier in its
class, and the top fraction per class is recorded as the dataset's selection (DM-Improves-AT's 1M-of-5M filter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from safetensors.torch import save as st_save

from .data.shards import (
    FORMAT,
    FORMAT_VERSION,
    LAYOUTS,
    MANIFEST_NAME,
    SELECTION_NAME,
    SHARD_DIR,
    atomic_write_bytes,
    atomic_write_json,
    load_manifest,
    read_shard,
    sha256_file,
    shard_name,
    write_manifest,
    write_shard,
)

__all__ = ["generate_dataset", "main_generate", "sample_seed", "add_generate_arguments", "run_generate"]

_SEED_SHIFT = 32


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
    from .diffusion.contrastive import EmbeddingHead

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


def _sidecar(root: Path, k: int) -> Path:
    return root / SHARD_DIR / f"{shard_name(k)}.json"


def _shard_done(root: Path, k: int, verify: bool) -> bool:
    side = _sidecar(root, k)
    if not side.is_file():
        return False
    try:
        rec = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    path = root / rec["file"]
    if not path.is_file():
        return False
    return not verify or sha256_file(path) == rec.get("sha256")


def _plan_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


@torch.no_grad()
def _confidence(classifier: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor | None):
    x = images_u8.to(next((p.device for p in classifier.parameters()), images_u8.device)).float().div(255.0)
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
    classes: Sequence[str] | None = None,
    layout: str = "NHWC",
    filter_classifier: nn.Module | None = None,
    keep_fraction: float | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> dict:
    """Generate ``num_samples`` class-balanced images with ``sampler`` into shard folder ``out_dir``.

    ``sampler`` is a :class:`robaug.GuidedDiffusion` / :class:`robaug.ContrastiveGuidedSampler` (anything called as
    ``sampler(class_labels=..., seeds=...)`` returning ``[0, 1]`` images with a ``config()`` method). Under
    ``torch.distributed`` every rank calls this with the same arguments and generates its own shards.
    ``filter_classifier`` + ``keep_fraction``: store each image's confidence in its class (unconditional runs:
    the classifier's predicted class becomes the label) and select the top fraction per class. Existing shards of
    the same run are kept (resume); a folder holding a different run raises unless ``overwrite``. Returns the
    final manifest.
    """
    root = Path(out_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    num_samples, shard_size, batch_size = int(num_samples), int(shard_size), int(batch_size)
    if num_samples < 1 or shard_size < 1 or batch_size < 1:
        raise ValueError("num_samples, shard_size and batch_size must all be >= 1")
    if num_samples > (1 << _SEED_SHIFT):
        raise ValueError("at most 2**32 samples per run (use another seed for more)")
    if (keep_fraction is None) != (filter_classifier is None):
        raise ValueError("confidence filtering needs both filter_classifier and keep_fraction")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    denoiser = getattr(sampler, "denoiser", None)
    if num_classes is None:
        num_classes = getattr(denoiser, "num_classes", None)
    from .diffusion.guidance import ClassifierGuidance

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
        "labels": "index % num_classes" if num_classes else ("classifier prediction" if filter_classifier else "none (-1)"),
        "classes": list(classes) if classes is not None else None, "layout": layout, "image_shape": image_shape,
        "model": {"name": model_name, "fingerprint": _fingerprint(denoiser)},
        "sampler": sampler.config() if hasattr(sampler, "config") else {"type": type(sampler).__name__},
        "sampler_fingerprint": _fingerprint(sampler),
        "filter": None if filter_classifier is None else {
            "keep_fraction": float(keep_fraction), "classifier": type(filter_classifier).__name__,
            "fingerprint": _fingerprint(filter_classifier)},
    }

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
            raise RuntimeError(f"rank {rank}: settings differ from rank 0's in {diff}; every rank needs the same arguments")

    # -- this rank's shards ---------------------------------------------------------------------------------
    todo = [k for k in range(rank, num_shards, world) if not _shard_done(root, k, verify)]
    total = sum(min(shard_size, num_samples - k * shard_size) for k in todo)
    bar = None
    if progress and rank == 0 and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="img", desc=f"generate (rank 0 of {world})", smoothing=0.05)
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
            rel = f"{SHARD_DIR}/{shard_name(k)}.safetensors"
            sha = write_shard(root / rel, images.contiguous(), lab_all, **extra)
            counts = torch.bincount(lab_all.clamp(min=0), minlength=num_classes or 0).tolist() if (lab_all >= 0).any() else []
            atomic_write_json(_sidecar(root, k), {
                "index": k, "file": rel, "start": start, "count": stop - start,
                "seed_start": sample_seed(seed, start), "sha256": sha, "class_counts": counts})
    finally:
        if bar is not None:
            bar.close()

    # -- finalise (rank 0): manifest with every shard, optional selection -------------------------------------
    _barrier()
    if rank == 0:
        missing = [k for k in range(num_shards) if not _sidecar(root, k).is_file()]
        if missing:
            raise RuntimeError(f"{len(missing)} shard(s) missing after generation (e.g. {missing[:5]}); rerun to finish")
        shards = [json.loads(_sidecar(root, k).read_text()) for k in range(num_shards)]
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
    data = st_save({"index": index.contiguous()})
    atomic_write_bytes(root / SELECTION_NAME, data)
    return {"file": SELECTION_NAME, "count": int(index.numel()), "keep_fraction": keep_fraction,
            "sha256": hashlib.sha256(data).hexdigest()}


# ------------------------------------------------------------------------------------------------------------
# command line


def _load_object(spec: str):
    mod_name, _, attr = spec.partition(":")
    import importlib

    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, nn.Module):
        obj = obj()
    return obj


def _looks_like_import(spec: str) -> bool:
    mod, sep, attr = spec.partition(":")
    return bool(sep) and bool(attr) and "/" not in mod and not os.path.exists(spec) and not attr.endswith(".safetensors")


def load_classifier(spec: str, num_classes: int | None, in_channels: int, device: torch.device) -> nn.Module:
    """``ARCH:WEIGHTS.safetensors`` (a ``robaug.models`` architecture taking ``[0, 1]`` images) or
    ``package.module:factory`` (an ``nn.Module`` or a zero-argument callable returning one)."""
    if _looks_like_import(spec):
        model = _load_object(spec)
    else:
        arch, sep, weights = spec.partition(":")
        if not sep or not weights.endswith(".safetensors"):
            raise ValueError(f"classifier spec {spec!r}: use ARCH:WEIGHTS.safetensors or package.module:factory")
        if num_classes is None:
            raise ValueError("loading a classifier by architecture needs --num-classes")
        from safetensors.torch import load_file

        from .models import create_model

        model = create_model(arch, num_classes, in_channels=in_channels)
        model.load_state_dict(load_file(weights))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec!r} did not give an nn.Module but {type(model).__name__}")
    return model.to(device).eval()


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--model", required=True, help="registered name (robaug list), Hub id, local diffusers folder / "
                   ".safetensors, or package.module:factory returning a robaug Denoiser")
    g.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    g.add_argument("--num-samples", type=int, required=True)
    g.add_argument("--shard-size", type=int, default=10_000)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-classes", type=int, default=None, help="default: the model's")
    g.add_argument("--image-size", type=int, default=None, help="for models without a native sample size")
    g.add_argument("--layout", choices=LAYOUTS, default="NHWC")
    g.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    g.add_argument("--model-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    g.add_argument("--overwrite", action="store_true", help="delete a different run found in --out")
    g.add_argument("--verify", action="store_true", help="re-hash existing shards before skipping them")
    g.add_argument("--no-progress", action="store_true")
    s = p.add_argument_group("sampler")
    s.add_argument("--solver", choices=["heun", "euler", "ddim"], default="heun")
    s.add_argument("--steps", type=int, default=18)
    s.add_argument("--sigma-min", type=float, default=None)
    s.add_argument("--sigma-max", type=float, default=None)
    s.add_argument("--rho", type=float, default=7.0)
    s.add_argument("--s-churn", type=float, default=0.0)
    s.add_argument("--s-tmin", type=float, default=0.0)
    s.add_argument("--s-tmax", type=float, default=math.inf)
    s.add_argument("--s-noise", type=float, default=1.0)
    s.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity")
    s.add_argument("--discretization", choices=["karras", "timesteps"], default=None)
    s.add_argument("--timestep-spacing", choices=["leading", "trailing", "linspace"], default="leading")
    s.add_argument("--no-round-sigmas", action="store_true")
    s.add_argument("--clip-denoised", action="store_true")
    s.add_argument("--state-dtype", choices=["float64", "float32"], default="float64")
    gd = p.add_argument_group("guidance")
    gd.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance weight (1 = none)")
    gd.add_argument("--classifier", default=None, help="classifier guidance: ARCH:WEIGHTS.safetensors or module:factory")
    gd.add_argument("--classifier-scale", type=float, default=1.0)
    gd.add_argument("--classifier-mode", choices=["x0", "xt"], default="x0")
    gd.add_argument("--classifier-weighting", choices=["constant", "score", "eps"], default=None,
                    help="default: constant in x0 mode, score in xt mode")
    c = p.add_argument_group("contrastive guidance (Contrastive-DP)")
    c.add_argument("--contrastive-encoder", default=None,
                   help="enables contrastive guidance: a classifier (its penultimate features) as ARCH:WEIGHTS or module:factory")
    c.add_argument("--contrastive-scale", type=float, default=100.0)
    c.add_argument("--contrastive-loss", choices=["hard", "infonce"], default="hard")
    c.add_argument("--contrastive-weighting", choices=["constant", "score", "eps"], default=None)
    c.add_argument("--tau", type=float, default=None)
    c.add_argument("--tau-plus", type=float, default=0.1)
    c.add_argument("--beta", type=float, default=1.0)
    c.add_argument("--contrastive-sigma-min", type=float, default=0.0)
    c.add_argument("--contrastive-sigma-max", type=float, default=math.inf)
    c.add_argument("--head-lr", type=float, default=1e-2)
    c.add_argument("--head-seed", type=int, default=0)
    f = p.add_argument_group("confidence filtering (DM-Improves-AT's top-20%% selection)")
    f.add_argument("--filter-classifier", default=None, help="ARCH:WEIGHTS.safetensors or module:factory")
    f.add_argument("--keep-fraction", type=float, default=None)


def _init_distributed(device_arg: str | None) -> tuple[torch.device, bool]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(device_arg)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device(f"cuda:{local_rank}")
    created = False
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return device, created


def run_generate(args: argparse.Namespace) -> dict:
    device, created = _init_distributed(args.device)
    try:
        from .diffusion.contrastive import ContrastiveGuidedSampler
        from .diffusion.samplers import GuidedDiffusion

        dtype = getattr(torch, args.model_dtype)
        if _looks_like_import(args.model):
            denoiser = _load_object(args.model)
        else:
            from .hub import load_denoiser

            denoiser = load_denoiser(args.model, progress=_dist()[0] == 0)
        denoiser = denoiser.to(device=device, dtype=dtype) if dtype != torch.float32 else denoiser.to(device)
        denoiser.eval()
        nc = args.num_classes if args.num_classes is not None else getattr(denoiser, "num_classes", None)
        in_ch = int(denoiser.in_channels)
        kw: dict[str, Any] = dict(
            num_steps=args.steps, solver=args.solver, sigma_min=args.sigma_min, sigma_max=args.sigma_max, rho=args.rho,
            cfg_scale=args.cfg_scale, s_churn=args.s_churn, s_tmin=args.s_tmin, s_tmax=args.s_tmax,
            s_noise=args.s_noise, eta=args.eta, discretization=args.discretization,
            timestep_spacing=args.timestep_spacing, round_sigmas=not args.no_round_sigmas,
            clip_denoised=args.clip_denoised, state_dtype=getattr(torch, args.state_dtype),
            image_size=args.image_size,
        )
        if args.classifier:
            kw.update(classifier=load_classifier(args.classifier, nc, in_ch, device),
                      classifier_scale=args.classifier_scale, classifier_mode=args.classifier_mode,
                      classifier_weighting=args.classifier_weighting)
        if args.contrastive_encoder:
            sampler = ContrastiveGuidedSampler(
                denoiser, load_classifier(args.contrastive_encoder, nc, in_ch, device),
                contrastive_scale=args.contrastive_scale, contrastive_loss=args.contrastive_loss,
                contrastive_weighting=args.contrastive_weighting, tau=args.tau,
                tau_plus=args.tau_plus, beta=args.beta, head_lr=args.head_lr, head_seed=args.head_seed,
                contrastive_sigma_range=(args.contrastive_sigma_min, args.contrastive_sigma_max), **kw)
        else:
            sampler = GuidedDiffusion(denoiser, **kw)
        filt = load_classifier(args.filter_classifier, nc, in_ch, device) if args.filter_classifier else None
        classes = None
        manifest = generate_dataset(
            args.out, sampler, args.num_samples, shard_size=args.shard_size, batch_size=args.batch_size,
            seed=args.seed, num_classes=nc, classes=classes, layout=args.layout, filter_classifier=filt,
            keep_fraction=args.keep_fraction, model_name=args.model, overwrite=args.overwrite, verify=args.verify,
            progress=not args.no_progress,
        )
        if _dist()[0] == 0:
            sel = manifest.get("selection")
            extra = f", {sel['count']} selected" if sel else ""
            print(f"{args.out}: {manifest['num_samples']} images in {manifest['num_shards']} shards{extra}")
        return manifest
    finally:
        if created:
            torch.distributed.destroy_process_group()


def main_generate(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``robaug generate`` (and ``python -m robaug.generate``)."""
    p = argparse.ArgumentParser(prog="robaug generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_generate_arguments(p)
    run_generate(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main_generate())
