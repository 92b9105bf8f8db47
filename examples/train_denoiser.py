"""Train robaug's built-in class-conditional DDPM denoiser on Fashion-MNIST.

A diffusers ``UNet2DModel`` (28x28, 1 channel, class embedding with 10 classes + a null label) is
trained with the DDPM epsilon objective on a linear beta schedule (T = 1000):

    L = E_{x0, y, t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y') ||^2

where ``y'`` is the label replaced by the null label with probability ``--label-dropout`` so that the
same network works unconditionally and with classifier-free guidance. An EMA of the weights is
what gets exported. The run is resumable: a checkpoint is written every ``--ckpt-every`` steps and
at the end; rerunning the same command continues from it.

The shipped weights (robaug/weights/fmnist-ddpm.*) were made with the command recorded in
``robaug/weights/fmnist-ddpm.json`` under ``"training"``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file
from tqdm import tqdm

from robaug.data import load_fashion_mnist

NUM_CLASSES = 10
NULL_LABEL = 10

UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    num_class_embeds=NUM_CLASSES + 1,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fmnist-ddpm", help="run folder (checkpoints + exported weights)")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST root (default: search the usual places)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time (then export)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--export-dtype", default="float16", choices=["float16", "float32"])
    return p.parse_args(argv)


def export(ema: UNet2DModel, out_dir: Path, name: str, dtype: torch.dtype, extra: dict) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.json`` (configs, sha256, training record)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in ema.state_dict().items()}
    weights = out_dir / f"{name}.safetensors"
    tmp = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "robaug": name})
    os.replace(tmp, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = {
        "name": name,
        "architecture": "diffusers.UNet2DModel",
        "unet": {**UNET_CONFIG, "block_out_channels": list(UNET_CONFIG["block_out_channels"]),
                 "down_block_types": list(UNET_CONFIG["down_block_types"]),
                 "up_block_types": list(UNET_CONFIG["up_block_types"])},
        "scheduler": SCHEDULER_CONFIG,
        "num_classes": NUM_CLASSES,
        "null_label": NULL_LABEL,
        "dataset": "Fashion-MNIST (train split, 60,000 images)",
        "resolution": 28,
        "license": "Apache-2.0",
        "sha256": digest,
        **extra,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return weights


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    images, labels = load_fashion_mnist(args.data_root, train=True)
    x_all = images.float().div(127.5).sub(1.0)  # [-1, 1]

    model = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    abar = sched.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(args.seed)
    step, elapsed = 0, 0.0
    if ckpt_path.exists():  # our own checkpoint, written by this script: resume
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resumed from step {step} ({elapsed / 60:.1f} min)")

    def save_ckpt() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "elapsed": elapsed}, tmp)
        os.replace(tmp, ckpt_path)

    bar = tqdm(total=args.steps, initial=step, desc="train fmnist-ddpm", unit="step")
    t_start = time.time() - elapsed
    model.train()
    while step < args.steps:
        if args.minutes is not None and (time.time() - t_start) > args.minutes * 60:
            break
        idx = torch.randint(0, x_all.shape[0], (args.batch_size,), generator=gen)
        x0 = x_all[idx]
        y = labels[idx].clone()
        drop = torch.rand(args.batch_size, generator=gen) < args.label_dropout
        y[drop] = NULL_LABEL
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (args.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(model(xt, t, class_labels=y).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        elapsed = time.time() - t_start
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % args.ckpt_every == 0:
            save_ckpt()
    bar.close()
    save_ckpt()
    weights = export(
        ema, out, "fmnist-ddpm", getattr(torch, args.export_dtype),
        {"training": {"command": "python examples/train_denoiser.py " + " ".join(argv or os.sys.argv[1:]),
                      "seed": args.seed, "steps": step, "batch_size": args.batch_size,
                      "minutes": round(elapsed / 60, 1), "torch": torch.__version__,
                      "machine": "2 CPU cores, no GPU"}},
    )
    print(f"exported {weights} after {step} steps in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
