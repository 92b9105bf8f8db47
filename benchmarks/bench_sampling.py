"""Sampling throughput: GuidedDiffusion against diffusers' own DDIMScheduler loop, and the cost of guidance.

    python benchmarks/bench_sampling.py                         # the built-in model (random init if not shipped yet)
    python benchmarks/bench_sampling.py --weights fmnist-ddpm --batch 64 --evals 9 --repeats 5 --write-results

Every run makes ``--batch`` class-conditional images with the same UNet2DModel and the same number of network
evaluations (``--evals``, odd): diffusers' ``DDIMScheduler`` loop (``unet`` + ``scheduler.step``, as in
``DDIMPipeline``), robaug's DDIM (float32 and float64 state, batch generator or one seed per sample), robaug's Heun
with ``(evals + 1) / 2`` steps (``2N - 1`` evaluations), and the guided variants: CFG (w = 2, one doubled batch
per evaluation), classifier guidance through the denoiser (one backward pass per evaluation) and contrastive
guidance (Contrastive-DP, encoder + backward + one Adam step per evaluation). Runs alternate so that changes in
machine load hit all of them; the figures are medians of wall time and of process CPU time (CPU time is robust to
other jobs on a shared machine). ``--write-results`` replaces the "## Sampling" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel

from robaug.diffusion import DiffusersDenoiser
from robaug.diffusion.contrastive import ContrastiveGuidedSampler
from robaug.diffusion.samplers import GuidedDiffusion

ROOT = Path(__file__).resolve().parent.parent


def built_in_configs() -> tuple[dict, dict, int]:
    """The built-in model's UNet/scheduler config: from the shipped JSON, else from its training recipe."""
    js = ROOT / "robaug" / "weights" / "fmnist-ddpm.json"
    if js.is_file():
        import json

        data = json.loads(js.read_text())
        return dict(data["unet"]), dict(data["scheduler"]), int(data.get("null_label", 10))
    spec = importlib.util.spec_from_file_location("train_denoiser", ROOT / "examples" / "train_denoiser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.UNET_CONFIG), dict(mod.SCHEDULER_CONFIG), int(mod.NULL_LABEL)


def load(weights: str | None) -> tuple[DiffusersDenoiser, str]:
    if weights:
        from robaug.hub import load_denoiser

        return load_denoiser(weights), weights
    unet_cfg, sched_cfg, null = built_in_configs()
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_cfg).eval()
    return DiffusersDenoiser(unet, sched_cfg, null_label=null), "random init, built-in architecture"


def timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of a markdown file, leaving the other sections alone."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    lines = text.splitlines()
    head = f"## {title}"
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == head)
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        lines[start:end] = body.rstrip("\n").splitlines() + [""]
    except StopIteration:
        if lines and lines[-1].strip():
            lines.append("")
        lines += body.rstrip("\n").splitlines() + [""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="registry name / path for load_denoiser (default: random init)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--evals", type=int, default=9, help="network evaluations per sample (odd)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    if args.evals % 2 == 0:
        raise SystemExit("--evals must be odd (Heun makes 2N - 1 evaluations)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    D, source = load(args.weights)
    D = D.to(device).eval()
    unet = D.unet
    b, n = args.batch, args.evals
    shape = (b, D.in_channels, D.sample_size, D.sample_size)
    labels = torch.arange(b, device=device) % (D.num_classes or 1)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    sched = DDIMScheduler(**D.scheduler_config)
    sched.set_timesteps(n)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def diffusers_ddim():
        x = noise
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
        (x / 2 + 0.5).clamp(0, 1)
        sync()

    from robaug.models import SmallCNN

    clf = SmallCNN(10, in_channels=D.in_channels, width=16).to(device).eval()
    samplers = {
        "robaug DDIM, float32 state": GuidedDiffusion(D, n, "ddim", state_dtype=torch.float32),
        "robaug DDIM, float64 state": GuidedDiffusion(D, n, "ddim"),
        "robaug DDIM, one seed per sample": GuidedDiffusion(D, n, "ddim"),
        f"robaug Heun ({(n + 1) // 2} steps)": GuidedDiffusion(D, (n + 1) // 2, "heun"),
        "robaug DDIM + CFG (w=2)": GuidedDiffusion(D, n, "ddim", cfg_scale=2.0),
        "robaug DDIM + classifier guidance": GuidedDiffusion(D, n, "ddim", classifier=clf, classifier_scale=1.0),
        "robaug DDIM + contrastive guidance": ContrastiveGuidedSampler(D, clf, n, "ddim", contrastive_scale=100.0),
    }
    for name, s in samplers.items():
        assert s.num_evals == n, (name, s.num_evals)

    def run(name, s):
        def f():
            if "seed per sample" in name:
                s(labels, seeds=list(range(b)))
            else:
                s(labels, generator=torch.Generator(device).manual_seed(0))
            sync()

        return f

    runs = {"diffusers DDIMScheduler loop": diffusers_ddim, **{k: run(k, s) for k, s in samplers.items()}}
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(runs[name]))

    def med(name, k):
        return statistics.median(t[k] for t in times[name])

    base_w, base_c = med(names[0], 0), med(names[0], 1)
    unguided_c = med("robaug DDIM, float64 state", 1)
    header = (f"batch {b} x {D.in_channels}x{D.sample_size}x{D.sample_size}, {n} network evaluations per sample, "
              f"device {device}, threads {torch.get_num_threads()}, repeats {args.repeats}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, weights: {source}")
    rows = ["| run | wall s | images/s | wall ratio vs diffusers | CPU s | CPU ratio vs diffusers "
            "| CPU ratio vs unguided |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        w, c = med(name, 0), med(name, 1)
        rows.append(f"| {name} | {w:.2f} | {b / w:.1f} | {w / base_w:.3f} | {c:.2f} | {c / base_c:.3f} | "
                    f"{c / unguided_c:.2f} |")
    table = "\n".join(rows)
    print("# " + header)
    print(table)
    if args.write_results:
        cmd = ("python benchmarks/bench_sampling.py" + (f" --weights {args.weights}" if args.weights else "")
               + f" --batch {b} --evals {n} --repeats {args.repeats}"
               + (f" --threads {args.threads}" if args.threads else "") + " --write-results")
        body = (f"## Sampling\n\n`{cmd}`\n\n{header}.\n\n{table}\n\n"
                "Same UNet2DModel, same labels, same number of network evaluations in every row; medians over "
                "alternating repeats. CPU time (process time) is the figure to trust on a shared machine. "
                "CFG doubles the batch per evaluation; classifier guidance adds a backward pass through the UNet "
                "and the classifier per evaluation; contrastive guidance adds the encoder, a backward pass and one "
                "Adam step of the embedding head.\n")
        write_section(ROOT / "benchmarks" / "RESULTS.md", "Sampling", body)
        print("wrote benchmarks/RESULTS.md (## Sampling)")


if __name__ == "__main__":
    main()
