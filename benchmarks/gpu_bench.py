"""The three speed comparisons of scripts/gpu_check.sh, each against an anchor timed in the same run, into one JSON.

    python benchmarks/gpu_bench.py --device cuda --out gpu_bench.json
    python benchmarks/gpu_bench.py --device cpu --quick            # the same code path on a CPU, small sizes

1. IPMix on a uint8 batch vs torchvision's AugMix (v2.AugMix on the whole batch: one op chain shared by the batch,
   so it does less work than per-sample IPMix) and, when kornia is installed, kornia's batched per-sample
   augmentations (ColorJitter + RandomAffine + RandomEqualize).
2. DiffAug on a uint8 batch vs a bare forward of the same UNet (fp32, and under bf16 autocast on CUDA).
3. robaug's DDIM vs diffusers' DDIMScheduler loop at equal network evaluations, when diffusers is installed.
Times are medians over repeats of alternating runs, with CUDA synchronised around each timed call.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired(fns: dict, device: torch.device, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating so load changes hit all of them."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_ipmix(device: torch.device, batch: int, size: int, repeats: int) -> dict:
    from torchvision.transforms import v2

    import robaug

    g = torch.Generator(device).manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    ipmix = robaug.IPMix(generator=g)
    augmix = v2.AugMix()
    fns = {"ipmix": lambda: ipmix(x), "torchvision_augmix_batch": lambda: augmix(x)}
    try:
        import kornia.augmentation as K

        kaug = K.AugmentationSequential(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0),
                                        K.RandomAffine(15, translate=(0.1, 0.1), p=1.0), K.RandomEqualize(p=0.5))
        xf = x.float() / 255
        fns["kornia_batched"] = lambda: kaug(xf)
    except ImportError:
        pass
    t = paired(fns, device, repeats)
    res = {f"{k}_s": v for k, v in t.items()}
    res.update(batch=batch, size=size, images_per_s=batch / t["ipmix"],
               ratio_vs_torchvision_augmix=t["torchvision_augmix_batch"] / t["ipmix"])
    if "kornia_batched" in t:
        res["ratio_vs_kornia"] = t["kornia_batched"] / t["ipmix"]
    return res


def _denoiser(device: torch.device):
    from robaug.hub import load_denoiser

    return load_denoiser("fmnist-ddpm").to(device).eval()


def bench_diffaug(device: torch.device, batch: int, repeats: int) -> dict:
    import robaug

    den = _denoiser(device)
    unet = den.unet
    da = robaug.DiffAug(den, generator=torch.Generator(device).manual_seed(0)).to(device)
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, device=device)
    xf = torch.randn(batch, 1, 28, 28, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.full((batch,), 10, device=device)

    @torch.no_grad()
    def bare():
        return unet(xf, t, class_labels=y).sample

    fns = {"bare_forward": bare, "diffaug": lambda: da(x)}
    res = {}
    if device.type == "cuda":
        da_bf16 = robaug.DiffAug(den, generator=torch.Generator(device).manual_seed(0),
                                 autocast_dtype=torch.bfloat16).to(device)

        @torch.no_grad()
        def bare_bf16():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return unet(xf, t, class_labels=y).sample

        fns.update(bare_forward_bf16=bare_bf16, diffaug_bf16=lambda: da_bf16(x))
    tm = paired(fns, device, repeats)
    res.update({f"{k}_s": v for k, v in tm.items()})
    res.update(batch=batch, ratio_diffaug_over_bare=tm["diffaug"] / tm["bare_forward"])
    if "diffaug_bf16" in tm:
        res["ratio_diffaug_over_bare_bf16"] = tm["diffaug_bf16"] / tm["bare_forward_bf16"]
    return res


def bench_sampler(device: torch.device, batch: int, evals: int, repeats: int) -> dict:
    import robaug

    den = _denoiser(device)
    labels = torch.arange(batch, device=device) % 10
    sampler = robaug.GuidedDiffusion(den, num_steps=evals, solver="ddim", state_dtype=torch.float32)
    fns = {"robaug_ddim": lambda: sampler.sample(labels, generator=torch.Generator(device).manual_seed(0))}
    try:
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(den.scheduler_config) if hasattr(den, "scheduler_config") else None
    except ImportError:
        sched = None
    if sched is not None:
        unet = den.unet

        @torch.no_grad()
        def diffusers_loop():
            sched.set_timesteps(evals)
            g = torch.Generator(device).manual_seed(0)
            x = torch.randn(batch, 1, 28, 28, generator=g, device=device)
            for step in sched.timesteps:
                eps = unet(x, step.to(device), class_labels=labels).sample
                x = sched.step(eps, step, x).prev_sample
            return x

        fns["diffusers_ddim"] = diffusers_loop
    tm = paired(fns, device, repeats)
    res = {f"{k}_s": v for k, v in tm.items()}
    res.update(batch=batch, evals=evals)
    if "diffusers_ddim" in tm:
        res["ratio_robaug_over_diffusers"] = tm["robaug_ddim"] / tm["diffusers_ddim"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (a check of the script)")
    ap.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    q = args.quick
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "ipmix_32px": bench_ipmix(device, 32 if q else 512, 32, 2 if q else 10),
        f"ipmix_{64 if q else 224}px": bench_ipmix(device, 4 if q else 128, 64 if q else 224, 2 if q else 5),
        "diffaug": bench_diffaug(device, 8 if q else 256, 2 if q else 10),
        "sampler": bench_sampler(device, 4 if q else 256, 3 if q else 25, 2 if q else 5),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
