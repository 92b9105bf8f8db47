#!/usr/bin/env python
"""How strong must contrastive guidance be to change anything? One batch of 250 fmnist-ddpm images per guidance
scale (the same seeds and classes as the `cond` set of examples/fmnist_dmat_study.py, so every difference is the
guidance's), compared with the unguided images: mean change in grey levels, agreement of a standard classifier
with the conditioning class (fidelity) and the mean nearest-neighbour distance inside the batch (how
distinguishable the samples are, what Contrastive-DP wants to raise). Writes a table and an image grid.

    OMP_NUM_THREADS=1 python examples/contrastive_scale_sweep.py --study runs/fmnist-dmat \\
        --out runs/contrastive-sweep --figure docs/img/contrastive_scale.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SETTINGS = [("constant", 100.0), ("constant", 1000.0), ("constant", 3000.0), ("constant", 10000.0),
            ("constant", 100000.0), ("eps", 400.0)]


def folder(out: Path, weighting: str, scale: float) -> Path:
    return out / f"{weighting}-{scale:g}"


def generate(a, weighting: str, scale: float) -> Path:
    """The first batch of the study's contrastive set at this scale (resumes / reuses like any generate run)."""
    dst = folder(Path(a.out), weighting, scale)
    cmd = [sys.executable, "-m", "robaug", "generate", "--model", "fmnist-ddpm", "--out", str(dst), "--num-samples",
           "250", "--batch-size", "250", "--shard-size", "250", "--solver", "heun", "--steps", "10",
           "--model-dtype", "bfloat16", "--seed", "0", "--contrastive-encoder",
           str(Path(a.study) / "trades-real-seed0"), "--contrastive-scale", str(scale), "--contrastive-weighting",
           weighting, "--contrastive-sigma-min", "2.04", "--quiet"]
    subprocess.run(cmd, check=True)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="runs/fmnist-dmat", help="--out of fmnist_dmat_study.py (gen-cond, labeler, "
                                                                "trades-real-seed0)")
    p.add_argument("--out", default="runs/contrastive-sweep")
    p.add_argument("--figure", default=None)
    a = p.parse_args(argv)

    import torch

    from robaug.data.shards import load_shards
    from robaug.recipes.trained import load_trained_model

    clf = load_trained_model(Path(a.study) / "labeler", "cpu")[0].eval()
    cx, cy = load_shards(Path(a.study) / "gen-cond")[:2]
    ref = cx[:250].float() / 255

    def stats(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
        x = x.float() / 255
        with torch.no_grad():
            agree = (clf(x).argmax(1) == y).float().mean().item()
        d = torch.cdist(x.flatten(1), x.flatten(1))
        d.fill_diagonal_(float("inf"))
        return (255 * (x - ref).abs().mean().item(), agree, d.min(1).values.mean().item())

    rows = [("none (cond)", cx[:250], *stats(cx[:250], cy[:250]))]
    for weighting, scale in SETTINGS:
        x, y = load_shards(generate(a, weighting, scale))[:2]
        rows.append((f"{scale:g} ({weighting})", x, *stats(x, y)))
    lines = ["| guidance scale (weighting) | mean change (grey levels) | classifier agrees with the class | "
             "nearest-neighbour l2 in the batch |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {dx:.1f} | {100 * ag:.1f}% | {nn:.2f} |" for name, _, dx, ag, nn in rows]
    print("\n".join(lines))
    if a.figure:
        from torchvision.utils import save_image

        grid = torch.nn.functional.interpolate(torch.cat([x[:12] for _, x, *_ in rows]).float() / 255,
                                               scale_factor=3, mode="nearest")
        Path(a.figure).parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, a.figure, nrow=12, padding=1, pad_value=1.0)
        print(f"rows of {a.figure}: " + ", ".join(name for name, *_ in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
