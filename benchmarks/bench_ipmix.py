"""IPMix throughput against torchvision's per-image AugMix, measured side by side; fractal generation speed.

For each size, every repeat runs (a) robaug's IPMix on a 256-image uint8 batch in one call and (b) torchvision's
``v2.AugMix()`` on the same 256 images one at a time (how it runs in DataLoader workers), alternating, and
records wall and process CPU time. The ratio is taken per repeat (so both sides see the same machine load)
and the median reported. Also: IPMix called image by image (DataLoader-worker use), the JSD mode, and
fractals/s of the mixing-set generator.

With ``--baseline REV`` the IPMix of git revision ``REV`` (extracted with ``git archive`` and imported beside the
working tree's) runs in the same alternation on the same batch, giving a paired before/after speed-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_ipmix.py --threads 1 --repeats 9 --write
    OMP_NUM_THREADS=1 python benchmarks/bench_ipmix.py --threads 1 --repeats 21 --baseline 8db885d --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robaug.transforms import generate_fractals  # noqa: E402
from robaug.transforms.ipmix import IPMix  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def load_baseline(rev: str) -> type:
    """The ``IPMix`` class of git revision ``rev``, imported from a ``git archive`` copy beside the current one."""
    root = Path(__file__).resolve().parents[1]
    tmp = tempfile.mkdtemp(prefix="robaug-baseline-")
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "robaug"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
    current = {name: mod for name, mod in sys.modules.items() if name == "robaug" or name.startswith("robaug.")}
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, tmp)
    try:
        from robaug.transforms.ipmix import IPMix as Baseline
    finally:
        sys.path.remove(tmp)
        for name in [n for n in sys.modules if n == "robaug" or n.startswith("robaug.")]:
            del sys.modules[name]
        sys.modules.update(current)
    return Baseline


def bench_size(size: int, preset: str, batch: int, repeats: int, baseline: type | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    ipmix = IPMix(preset=preset, generator=torch.Generator().manual_seed(1))
    before = baseline(preset=preset, generator=torch.Generator().manual_seed(1)) if baseline else None
    augmix = v2.AugMix()
    ipmix(x[:2])  # builds the fractal mixing set at this size (not timed)
    if before is not None:
        before(x[:2])
    for i in range(4):
        augmix(x[i])
    rows = {"ipmix": [], "augmix": [], "ratio_wall": [], "ratio_cpu": [], "before": [], "speedup_cpu": []}
    for _ in range(repeats):
        iw, ic = timed(lambda: ipmix(x))
        aw, ac = timed(lambda: [augmix(x[i]) for i in range(batch)])
        rows["ipmix"].append((iw, ic))
        rows["augmix"].append((aw, ac))
        rows["ratio_wall"].append(aw / iw)
        rows["ratio_cpu"].append(ac / ic)
        if before is not None:
            bw, bc = timed(lambda: before(x))
            rows["before"].append((bw, bc))
            rows["speedup_cpu"].append(bc / ic)
    med = lambda v: statistics.median(v)  # noqa: E731
    extra = {}
    if before is not None:
        extra = {
            "before_cpu": batch / med([c for _, c in rows["before"]]),
            "before_ratio_cpu": med([ac / bc for (_, ac), (_, bc) in zip(rows["augmix"], rows["before"])]),
            "speedup_cpu": med(rows["speedup_cpu"]),
            "speedup_cpu_range": (min(rows["speedup_cpu"]), max(rows["speedup_cpu"])),
        }
    return {
        **extra,
        "size": size,
        "preset": preset,
        "ipmix_wall": batch / med([w for w, _ in rows["ipmix"]]),
        "ipmix_cpu": batch / med([c for _, c in rows["ipmix"]]),
        "augmix_wall": batch / med([w for w, _ in rows["augmix"]]),
        "augmix_cpu": batch / med([c for _, c in rows["augmix"]]),
        "ratio_wall": med(rows["ratio_wall"]),
        "ratio_cpu": med(rows["ratio_cpu"]),
        "ratio_cpu_range": (min(rows["ratio_cpu"]), max(rows["ratio_cpu"])),
        "repeats": repeats,
    }


def bench_single(size: int, n: int, repeats: int) -> dict:
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ipmix, augmix = IPMix(), v2.AugMix()
    ipmix(x[0])
    ratios, ips = [], []
    for _ in range(repeats):
        iw, _ = timed(lambda: [ipmix(x[i]) for i in range(n)])
        aw, _ = timed(lambda: [augmix(x[i]) for i in range(n)])
        ratios.append(aw / iw)
        ips.append(n / iw)
    return {"size": size, "ipmix_wall": statistics.median(ips), "ratio_wall": statistics.median(ratios)}


def bench_jsd(size: int, batch: int, repeats: int) -> dict:
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ipmix = IPMix(num_views=2, generator=torch.Generator().manual_seed(1))
    ipmix(x[:2])
    walls = [timed(lambda: ipmix(x))[0] for _ in range(repeats)]
    return {"size": size, "images_wall": batch / statistics.median(walls)}


def bench_fractals(size: int, n: int, repeats: int) -> dict:
    generate_fractals(8, size)
    runs = [timed(lambda: generate_fractals(n, size, seed=0)) for _ in range(repeats)]
    return {
        "size": size,
        "n": n,
        "wall": n / statistics.median([w for w, _ in runs]),
        "cpu": n / statistics.median([c for _, c in runs]),
    }


def bench_default_set(size: int) -> dict:
    from robaug.transforms import MixingSet

    w, c = timed(lambda: MixingSet().prepare(size))
    return {"size": size, "wall": w, "cpu": c}


def render(
    args: argparse.Namespace, sizes: list[dict], single: dict, jsd: dict, fractals: list[dict], default_set: dict
) -> str:
    load = os.getloadavg()
    reps = ", ".join(f"{r['repeats']} at {r['size']} px" for r in sizes)
    command = (f"OMP_NUM_THREADS={args.threads} python benchmarks/bench_ipmix.py --threads {args.threads} "
               f"--repeats {args.repeats}")
    if args.baseline:
        command += f" --baseline {args.baseline}"
    lines = [
        "## IPMix",
        "",
        f"robaug `IPMix` on a {args.batch}-image uint8 batch (3 channels, one call, per-sample randomness) against",
        "torchvision's `v2.AugMix()` (defaults: severity 3, width 3, random depth, all ops) applied image by image",
        f"to the same images, alternating ({reps}), medians; ratio = median of the per-repeat ratios.",
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, {args.threads} thread(s);",
        f"load average during the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores (shared",
        "machine: wall times scatter, CPU-time ratios are steadier). Target: >= 10x AugMix at 32x32.",
        "",
        f"Command: `{command}`",
        "",
        "| size | IPMix preset | IPMix img/s (wall) | AugMix img/s (wall) | ratio (wall) "
        "| IPMix img/s (CPU) | AugMix img/s (CPU) | ratio (CPU) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sizes:
        lines.append(
            f"| {r['size']}x{r['size']} | {r['preset']} | {r['ipmix_wall']:.0f} | {r['augmix_wall']:.0f} | "
            f"**{r['ratio_wall']:.1f}x** | {r['ipmix_cpu']:.0f} | {r['augmix_cpu']:.0f} | **{r['ratio_cpu']:.1f}x** |"
        )
    if args.baseline:
        lines += [
            "",
            f"Before/after: the IPMix of revision `{args.baseline}` timed in the same alternation on the same batch",
            "(speed-up = median of the per-repeat CPU-time ratios before / after).",
            "",
            "| size | before img/s (CPU) | after img/s (CPU) | speed-up (CPU) "
            "| before vs AugMix (CPU) | after vs AugMix (CPU) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in sizes:
            lo, hi = r["speedup_cpu_range"]
            lines.append(
                f"| {r['size']}x{r['size']} | {r['before_cpu']:.0f} | {r['ipmix_cpu']:.0f} "
                f"| **{r['speedup_cpu']:.2f}x** "
                f"({lo:.2f}-{hi:.2f}) | {r['before_ratio_cpu']:.2f}x | {r['ratio_cpu']:.2f}x |"
            )
    lines.append("")
    for r in sizes:
        lo, hi = r["ratio_cpu_range"]
        lines.append(f"- {r['size']}x{r['size']}: per-repeat CPU-time ratios ranged from {lo:.1f}x to {hi:.1f}x.")
    lines += [
        f"- IPMix called image by image (as in DataLoader workers), {single['size']}x{single['size']}: "
        f"{single['ipmix_wall']:.0f} img/s, {single['ratio_wall']:.2f}x AugMix. Per-call overhead dominates there;",
        "  batch after the DataLoader (on the GPU when there is one) for speed.",
        f"- JSD mode (`num_views=2`, two views sharing the mixing picture), {jsd['size']}x{jsd['size']}: "
        f"{jsd['images_wall']:.0f} input images/s.",
    ]
    for f in fractals:
        lines.append(
            f"- Fractal generator, `generate_fractals({f['n']}, {f['size']})`: {f['wall']:.0f} fractals/s wall, "
            f"{f['cpu']:.0f} fractals/s CPU time."
        )
    lines.append(
        f"- Default mixing set for {default_set['size']}x{default_set['size']} inputs "
        f"(1024 fractals rendered at 128 px, "
        f"upsampled), built on first use: {default_set['wall']:.1f} s wall, {default_set['cpu']:.1f} s CPU."
    )
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace the ``## IPMix`` section of RESULTS.md (or append it), leaving other sections alone."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## IPMix\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--baseline", metavar="REV", help="also time the IPMix of this git revision (paired)")
    parser.add_argument("--write", action="store_true", help=f"update the IPMix section of {RESULTS.name}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    baseline = load_baseline(args.baseline) if args.baseline else None

    sizes = []
    for size in args.sizes:
        preset = "cifar" if size <= 64 else "imagenet"
        repeats = args.repeats if size <= 64 else max(3, args.repeats // 3)
        sizes.append(bench_size(size, preset, args.batch, repeats, baseline))
        print(sizes[-1], flush=True)
    single = bench_single(32, 256, args.repeats)
    print(single, flush=True)
    jsd = bench_jsd(32, args.batch, args.repeats)
    print(jsd, flush=True)
    fractals = [bench_fractals(32, 1024, 3), bench_fractals(128, 64, 3), bench_fractals(224, 16, 3)]
    print(fractals, flush=True)
    default_set = bench_default_set(224)
    print(default_set, flush=True)
    text = render(args, sizes, single, jsd, fractals, default_set)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
