"""The evaluation side of a training run: clean test accuracy during training (sharded over the processes), the
final evaluation a configuration asks for, the settings it depends on (to tell whether a finished run must be
evaluated again), and the summary line."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from robaug._core.dist import DistInfo
from robaug.data.datasets import DatasetInfo, TensorImages
from robaug.data.seeding import derive_seed

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["clean_test_accuracy", "evaluate_final", "eval_signature", "evaluated_corruptions", "summary_line",
           "TRAINING_KEYS"]


@torch.no_grad()
def clean_test_accuracy(model: nn.Module, test: Any, info: DatasetInfo, d: DistInfo, batch_size: int,
                   amp_dtype: torch.dtype | None, channels_last: bool) -> float:
    """Clean test accuracy, the test set sharded over the processes."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=d.device)
    total = torch.zeros((), dtype=torch.long, device=d.device)
    if isinstance(test, TensorImages):
        idx = torch.arange(d.rank, len(test), d.world_size)
        batches = ((test.images[idx[i:i + batch_size]], test.labels[idx[i:i + batch_size]])
                   for i in range(0, len(idx), batch_size))
    else:
        from torch.utils.data import DataLoader, Subset

        from .augment import SampleAugment
        from .loader import SampleDataset

        ds = Subset(SampleDataset(test, SampleAugment(info, None, train=False)), range(d.rank, len(test), d.world_size))
        batches = DataLoader(ds, batch_size=batch_size)
    for x, y in batches:
        x = x.to(d.device, non_blocking=True).float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x).argmax(1)
        correct += (pred == y.to(d.device)).sum()
        total += y.numel()
    if d.world_size > 1:
        both = torch.stack([correct, total])
        dist.all_reduce(both)
        correct, total = both[0], both[1]
    model.train(was)
    return float(correct) / max(1, int(total))


_EVAL_FIELDS = ("eval_corruptions", "corruption_root", "corruption_images", "corruption_seed", "corruptions")
_DE_FIELDS = ("de_timesteps", "de_images", "de_clean_images", "denoiser", "diffaug_bf16")
_ADV_FIELDS = ("eval_pgd", "eval_autoattack", "eval_adv_norm", "eval_adv_images", "eval_autoattack_version",
               "eval_autoattack_attacks", "eval_autoattack_iters")


def evaluated_corruptions(results: dict[str, Any]) -> list[str] | None:
    """The corruptions a finished run was actually evaluated on (``None`` when it has no corruption results)."""
    per = (results.get("corruption") or {}).get("per_corruption_accuracy")
    return list(per) if per else None


def eval_signature(c: dict[str, Any], evaluated: Sequence[str] | None = None) -> str:
    """The settings the final evaluation depends on (the DE ones only when the DE is evaluated).

    With the built-in -C set and no explicit list, the corruption list is the default one: ``evaluated`` (read
    from a finished run's results) or, for a new evaluation, :data:`~robaug.eval.corruptions.DEFAULT_CORRUPTIONS`,
    so a run evaluated before the default list grew is evaluated again.
    """
    sig = {k: c.get(k) for k in _EVAL_FIELDS}
    if sig["eval_corruptions"] and sig["corruptions"] is None and not sig["corruption_root"]:
        from robaug.eval.corruptions import DEFAULT_CORRUPTIONS

        sig["corruptions"] = sorted(evaluated if evaluated is not None else DEFAULT_CORRUPTIONS)
    sig["eval_de"] = bool(c.get("eval_de"))
    if sig["eval_de"]:
        sig.update({k: c.get(k) for k in _DE_FIELDS})
    if c.get("eval_pgd") is not None or c.get("eval_autoattack") is not None:  # adversarial evaluation requested
        sig.update({k: c.get(k) for k in _ADV_FIELDS})
    return json.dumps(sig, sort_keys=True)


TRAINING_KEYS = ("recipe_loss", "steps", "epochs", "train_images", "synthetic_images", "train_seconds",
                  "train_images_per_s", "world_size")


def evaluate_final(cfg: TrainConfig, model: nn.Module, info: DatasetInfo, test_ds: Any, device: torch.device,
                   denoiser: nn.Module | None, amp: bool) -> dict[str, Any]:
    """The final evaluation ``cfg`` asks for (clean, corruptions, DiffAug Ensemble, PGD / AutoAttack)."""
    from .evaluate import adversarial_evaluation, final_evaluation

    out = final_evaluation(
        model, info, test_ds, device=device, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        corruptions=cfg.eval_corruptions, corruption_root=cfg.corruption_root,
        corruption_images=cfg.corruption_images, corruption_seed=cfg.corruption_seed,
        corruption_names=cfg.corruptions, cache_dir=cfg.cache_dir,
        denoiser=denoiser if cfg.eval_de else None, de_timesteps=cfg.de_timesteps, de_images=cfg.de_images,
        de_clean_images=cfg.de_clean_images,
        de_kwargs={"autocast_dtype": torch.bfloat16} if cfg.diffaug_bf16 else None, amp=amp, progress=cfg.progress,
    )
    if cfg.eval_pgd is not None or cfg.eval_autoattack is not None:
        t0 = time.perf_counter()
        out["adversarial"] = adversarial_evaluation(
            model, info, test_ds, device=device, images=cfg.eval_adv_images, norm=cfg.eval_adv_norm,
            pgd=cfg.eval_pgd, autoattack_eps=cfg.eval_autoattack, autoattack_version=cfg.eval_autoattack_version,
            autoattack_attacks=cfg.eval_autoattack_attacks, autoattack_iters=cfg.eval_autoattack_iters,
            batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, seed=derive_seed(cfg.seed, "eval", 1),
        )
        out["eval_seconds"] = out.get("eval_seconds", 0.0) + time.perf_counter() - t0
    return out


def summary_line(r: dict[str, Any]) -> str:
    """One line of the headline numbers of ``results.json``."""
    parts = [f"clean acc {100 * r['clean_accuracy']:.2f}%"]
    if "corruption_accuracy" in r:
        parts.append(f"corruption acc {100 * r['corruption_accuracy']:.2f}%")
    adv = r.get("adversarial") or {}
    if "pgd" in adv:
        parts.append(f"{adv['pgd']['attack']} acc {100 * adv['pgd']['robust_accuracy']:.2f}%")
    if "autoattack" in adv:
        parts.append(f"AutoAttack acc {100 * adv['autoattack']['robust_accuracy']:.2f}%")
    de = r.get("diffaug_ensemble")
    if de and "corruption_accuracy" in de:
        parts.append(f"DE: clean {100 * de['clean_accuracy']:.2f}% / corruption {100 * de['corruption_accuracy']:.2f}%"
                     f" (plain on the same {de['images']} images: {100 * de['plain_corruption_accuracy']:.2f}%)")
    return f"{r['config']['recipe']}: " + ", ".join(parts) + f"; trained {r['train_seconds']:.0f}s"
