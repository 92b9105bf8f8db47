"""DiffAug throughput against a bare forward of the same UNet, measured side by side in one run.

    python benchmarks/bench_diffaug.py                       # random weights, the built-in model's architecture
    python benchmarks/bench_diffaug.py --weights robaug/weights/fmnist-ddpm.safetensors
    python benchmarks/bench_diffaug.py --weights path/to/diffusers_unet_folder   # or a registry name: fmnist-ddpm

The bare forward is ``unet(x_t, t, class_labels).sample`` on a ready float batch with per-sample t and the null
label; DiffAug is the full transform on a uint8 (and a float) batch: conversion, validation, t and noise draws,
noising, the same UNet forward, x0 formula, clip and conversion back. The two are timed alternately; the figure is
the median over repeats of each and their ratio (target: DiffAug <= 1.05 x the bare forward).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from robaug.diffusion import CallableDenoiser, DiffusersDenoiser
from robaug.transforms.diffaug import DiffAug

# the built-in fmnist-ddpm's architecture and schedule, read from its model card
_CARD = json.loads((Path(__file__).resolve().parents[1] / "robaug" / "weights" / "fmnist-ddpm.json").read_text())
UNET_CONFIG = dict(_CARD["unet"])
SCHEDULER_CONFIG = dict(_CARD["scheduler"])
NULL_LABEL = int(_CARD["null_label"])


def load_unet(weights: str | None) -> UNet2DModel:
    if weights is None:
        torch.manual_seed(0)
        return UNet2DModel(**UNET_CONFIG).eval()
    path = Path(weights)
    if not path.exists():  # a registry name, e.g. fmnist-ddpm
        from robaug.hub import load_denoiser

        return load_denoiser(weights).unet.eval()
    if path.is_dir():
        return UNet2DModel.from_pretrained(path, use_safetensors=True).eval()
    from safetensors.torch import load_file

    unet = UNet2DModel(**UNET_CONFIG)
    state = load_file(path)
    state = {k.removeprefix("unet."): v for k, v in state.items()}
    unet.load_state_dict(state)
    return unet.eval()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds); CPU time is robust to other jobs sharing the machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="UNet weights: a .safetensors state dict for the built-in config, "
                                      "a diffusers folder or a registry name")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    unet = load_unet(args.weights).to(device)
    denoiser = DiffusersDenoiser(unet, SCHEDULER_CONFIG, null_label=NULL_LABEL)
    aug = DiffAug(denoiser, generator=torch.Generator(device).manual_seed(0)).to(device)
    size = unet.config.sample_size
    b = args.batch
    g = torch.Generator(device).manual_seed(1)
    images_u8 = torch.randint(0, 256, (b, unet.config.in_channels, size, size), generator=g, device=device,
                              dtype=torch.uint8)
    images_f = images_u8.float() / 255
    x_t = torch.randn(b, unet.config.in_channels, size, size, generator=g, device=device)
    t = torch.randint(0, 1000, (b,), generator=g, device=device)
    labels = torch.full((b,), NULL_LABEL, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def bare():
        unet(x_t, t, class_labels=labels).sample
        sync()

    def diffaug_u8():
        aug(images_u8)
        sync()

    def diffaug_f32():
        aug(images_f)
        sync()

    # everything DiffAug does except the network: the same transform around an identity denoiser
    null = DiffAug(CallableDenoiser(lambda x, s, y: x, in_channels=unet.config.in_channels,
                                    num_classes=10, null_label=NULL_LABEL),
                   generator=torch.Generator(device).manual_seed(0))

    def overhead_only():
        null(images_u8)
        sync()

    runs = {"bare UNet forward": bare, "DiffAug (uint8 in/out)": diffaug_u8, "DiffAug (float in/out)": diffaug_f32,
            "DiffAug minus network": overhead_only}
    for fn in runs.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]  # alternate so drift in machine load hits all equally
        for name in order:
            times[name].append(timed(runs[name]))

    def med(name: str, k: int) -> float:
        return statistics.median(x[k] for x in times[name])

    print(f"# DiffAug benchmark: batch {b} x {unet.config.in_channels}x{size}x{size}, device {device}, "
          f"threads {torch.get_num_threads()}, repeats {args.repeats}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, weights: {args.weights or 'random init'}")
    print(f"{'run':<24}{'wall ms':>9}{'images/s':>10}{'ratio':>8}{'cpu ms':>9}{'cpu ratio':>10}")
    for name in names:
        w, c = med(name, 0), med(name, 1)
        print(f"{name:<24}{w * 1e3:>9.1f}{b / w:>10.0f}{w / med('bare UNet forward', 0):>8.3f}"
              f"{c * 1e3:>9.1f}{c / med('bare UNet forward', 1):>10.3f}")
    paired = [d[0] / a[0] for d, a in zip(times["DiffAug (uint8 in/out)"], times["bare UNet forward"])]
    print(f"median paired wall ratio DiffAug(uint8) / bare: {statistics.median(paired):.3f}")
    over = med("DiffAug minus network", 0) / med("bare UNet forward", 0)
    print(f"DiffAug overhead outside the network: {over * 100:.2f}% of the bare forward (wall)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
