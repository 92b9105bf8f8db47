#!/usr/bin/env python
"""Certified accuracy (denoised smoothing), OOD detection and calibration of the Fashion-MNIST recipes'
models: the second results block of docs/results.md (CPU).

Stage 1 trains the recipes' models exactly as examples/fmnist_results.py does (same network, budget, seeds and
arguments, without the DiffAug-Ensemble evaluation); stage 2 runs one :func:`robaug.eval.report` per model
(suites clean, certified, ood, calibration and optionally corruptions; ``quick`` sizes overridden by the flags
below), with denoised smoothing through the built-in ``fmnist-ddpm`` denoiser; stage 3 writes the tables
(mean ± sample standard deviation over seeds) between markers into --doc and a certified-accuracy figure.

Everything is resumable: a finished run (results.json) is not retrained, a finished report suite is not
recomputed (robaug.eval.report stores each suite with its settings' signature), so rerunning the same command
after an interruption continues where it stopped.

    OMP_NUM_THREADS=1 python examples/fmnist_eval_table.py --out runs/fmnist-eval --recipes baseline ipmix_jsd \\
        diffaug diffaug_ipmix_jsd --seeds 0 1 2 --jobs 2 --cert-sigmas 0.25 0.5 --cert-images 50 --cert-n0 50 \\
        --cert-n 1000 --denoiser-bf16 --doc docs/results.md --figure docs/img/certified_vs_radius.png

The stages can run side by side in separate processes (``--stage train`` / ``precompute`` / ``report`` /
``table``, with the same sizes): ``precompute`` fills the denoiser cache (the expensive part on a CPU: one
denoiser pass per noisy copy, shared by all models, see :func:`cached_denoiser`) while the models train.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import fmnist_results as FR  # noqa: E402  (the training arguments of the first table)
from _results_doc import mean_sd, replace_block  # noqa: E402

RECIPES = ["baseline", "ipmix", "ipmix_jsd", "diffaug", "diffaug_ipmix_jsd"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fmnist-eval", help="folder for the runs, their reports and the -C set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--model", default="small_cnn", help="network of the runs (as fmnist_results.py --model)")
    p.add_argument("--model-kwargs", default='{"width": 16}')
    p.add_argument("--epochs", type=int, default=1, help="training epochs of the runs (as fmnist_results.py)")
    p.add_argument("--cache-dir", default=None, help="where the Fashion-MNIST-C set is (default <out>/cache)")
    p.add_argument("--jobs", type=int, default=2, help="runs / reports in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--denoiser", default="fmnist-ddpm")
    p.add_argument("--denoiser-bf16", action="store_true",
                   help="run the denoiser under bfloat16 autocast (as the DiffAug training runs do); ~2.5x faster")
    p.add_argument("--suites", default="clean,certified,ood,calibration")
    p.add_argument("--cert-images", type=int, default=100, help="first N test images certified")
    p.add_argument("--cert-n0", type=int, default=100)
    p.add_argument("--cert-n", type=int, default=1000)
    p.add_argument("--cert-alpha", type=float, default=0.001)
    p.add_argument("--cert-sigmas", type=float, nargs="+", default=[0.25])
    p.add_argument("--cert-batch-size", type=int, default=1000)
    p.add_argument("--clean-images", type=int, default=10000, help="clean test images (clean + calibration)")
    p.add_argument("--corruption-images", type=int, default=1000, help="test images per (corruption, severity)")
    p.add_argument("--ood-images", type=int, default=2000, help="in-distribution images and images per OOD set")
    p.add_argument("--stage", choices=["all", "train", "precompute", "report", "table"], default="all")
    p.add_argument("--doc", default=None, help="markdown file whose fmnist-eval block is replaced")
    p.add_argument("--figure", default=None, help="PNG of certified accuracy vs radius (mean over seeds)")
    p.add_argument("--train-subset", type=int, default=None, help="(for smoke tests) first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="(for smoke tests) first N test images")
    return p.parse_args(argv)


def _train_ns(a) -> argparse.Namespace:
    """fmnist_results.py's defaults (the first table's training settings) with our folders."""
    t = FR.parse_args(["--out", a.out, "--seeds", *map(str, a.seeds), "--corruption-images",
                       str(a.corruption_images), "--model", a.model, "--model-kwargs", a.model_kwargs,
                       "--epochs", str(a.epochs)] + (["--cache-dir", a.cache_dir] if a.cache_dir else []))
    t.threads, t.train_subset, t.test_subset = a.threads, a.train_subset, a.test_subset
    return t


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def train_one(a, recipe: str, seed: int) -> dict:
    out = Path(a.out)
    folder = out / f"{recipe}-seed{seed}"
    if (folder / "results.json").is_file() and (folder / "model.safetensors").is_file():
        return json.loads((folder / "results.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "train.pid"
    while lock.is_file() and _alive(lock.read_text().strip()):  # another invocation is training this run
        time.sleep(30)
    if (folder / "results.json").is_file() and (folder / "model.safetensors").is_file():
        return json.loads((folder / "results.json").read_text())
    lock.write_text(str(os.getpid()))
    args = FR.run_args(_train_ns(a), recipe, seed, out) + ["--no-eval-de"]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    with open(folder / "log.txt", "a") as log:
        proc = subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{recipe} seed {seed} failed (exit {proc.returncode}); see {folder / 'log.txt'}")
    lock.unlink(missing_ok=True)
    res = json.loads((folder / "results.json").read_text())
    print(f"  trained {recipe:18s} seed {seed}: clean {100 * res['clean_accuracy']:.2f}% "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return res


# ------------------------------------------------------------------------------------------------------------
# denoised smoothing: the denoiser's outputs are the same for every classifier


def cached_denoiser(name: str, cache: Path, bf16: bool = False):
    """The denoiser ``name`` behind a disk cache of its outputs, keyed by a hash of its inputs.

    Denoised smoothing calls the denoiser on noisy copies that depend only on the test images, sigma and the
    generator seed, not on the classifier, so every model's report sends it the same batches; this wrapper
    computes each batch once (the outputs are the denoiser's own float32 results, stored as .npy) and makes the
    9-15 reports cost one denoiser pass in all. ``bf16``: the denoiser runs under bfloat16 autocast (as in the
    DiffAug training runs, ``--diffaug-bf16``), about 2.5x faster on a CPU; a buffer records it, so the reports'
    signatures (which hash the denoiser's weights) tell the two apart.
    """
    import hashlib

    import numpy as np
    import torch

    from robaug.diffusion.denoiser import Denoiser
    from robaug.eval.certify import _resolve

    inner = _resolve(name)

    class CachedDenoiser(Denoiser):
        casts_network_input = inner.casts_network_input
        discrete = inner.discrete

        def __init__(self) -> None:
            super().__init__(in_channels=inner.in_channels, sample_size=inner.sample_size,
                             num_classes=inner.num_classes, null_label=inner.null_label, sigma_min=inner.sigma_min,
                             sigma_max=inner.sigma_max, timestep_sigmas=inner.timestep_sigmas,
                             size_multiple=inner.size_multiple)
            self.inner = inner
            self.register_buffer("autocast_bf16", torch.tensor(bool(bf16)))
            self.hits = self.misses = 0

        def forward(self, x, sigma, class_labels=None):
            h = hashlib.sha256()
            for t in (x, torch.as_tensor(sigma)):
                t = t.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            h.update(repr(class_labels).encode())
            f = cache / f"{h.hexdigest()[:32]}.npy"
            if f.is_file():
                self.hits += 1
                return torch.from_numpy(np.load(f, allow_pickle=False)).to(x.device, x.dtype)
            self.misses += 1
            if bf16:
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                    out = self.inner(x, sigma, class_labels).to(x.dtype)
            else:
                out = self.inner(x, sigma, class_labels)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, out.detach().cpu().numpy(), allow_pickle=False)
            os.replace(tmp, f)
            return out

    cache.mkdir(parents=True, exist_ok=True)
    return CachedDenoiser().eval()


# ------------------------------------------------------------------------------------------------------------
# reports


def report_settings(a, sigma: float) -> dict:
    return dict(clean_images=a.clean_images, corruption_images=a.corruption_images, ood_images=a.ood_images,
                cert_images=a.cert_images, cert_n0=a.cert_n0, cert_n=a.cert_n, cert_sigmas=[sigma],
                cert_alpha=a.cert_alpha,
                cert_radii=[0.0, 0.25, 0.5, 0.75, 1.0], cert_batch_size=a.cert_batch_size)


def report_one(a, folder: Path, sigma: float, first: bool, den) -> dict:
    """The report of one run for one sigma: all suites for the first sigma, the certified suite for the others."""
    import torch

    from robaug.eval import report
    from robaug.recipes.trained import load_trained_model as load_run

    torch.set_num_threads(a.threads)
    if not (folder / "results.json").is_file():
        raise RuntimeError(f"{folder}: the training run has not finished (no results.json); train it first")
    model, cfg, run = load_run(folder)
    suites = [s.strip() for s in a.suites.split(",") if s.strip()]
    if not first:
        suites = ["certified"]
    if "certified" not in suites:
        den = None
    out = run / ("report" if first else f"report-sigma{sigma:g}")
    t0 = time.perf_counter()
    doc = report(model, cfg.dataset, suites=suites, out=out, quick=True, settings=report_settings(a, sigma),
                 denoiser=den, cache_dir=a.cache_dir or str(Path(a.out) / "cache"), name=f"{run.name} ({cfg.recipe})",
                 progress=False, figures=first)
    print(f"  report {run.name} sigma {sigma:g}: {time.perf_counter() - t0:.0f}s"
          f"{' (reused ' + ', '.join(doc['reused_suites']) + ')' if doc['reused_suites'] else ''}; denoiser cache "
          f"{getattr(den, 'hits', 0)} hits, {getattr(den, 'misses', 0)} misses so far", flush=True)
    return doc


def precompute(a, sigma: float, den) -> None:
    """Fill the denoiser cache for ``sigma``: one certified suite of an untrained network (the noisy copies, and
    so the denoiser's inputs, do not depend on the classifier)."""
    import torch

    from robaug.eval import report
    from robaug.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", 10, in_channels=1, width=16, img_size=28).eval()
    t0 = time.perf_counter()
    report(model, "fashion_mnist", suites=["certified"], out=Path(a.out) / f"denoiser-pass-sigma{sigma:g}",
           quick=True, settings=report_settings(a, sigma), denoiser=den, progress=True, figures=False)
    print(f"  denoiser pass sigma {sigma:g}: {time.perf_counter() - t0:.0f}s ({den.misses} batches computed, "
          f"{den.hits} reused)", flush=True)


# ------------------------------------------------------------------------------------------------------------
# tables


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    return mean_sd(values, scale, digits)


def _load_reports(a) -> tuple[dict[str, list[dict]], dict[str, dict[str, list[dict]]]]:
    """{recipe: [report per seed]} for the main reports and {sigma: {recipe: [...]}} for the certified ones."""
    main_reps: dict[str, list[dict]] = {}
    cert: dict[str, dict[str, list[dict]]] = {}
    for r in a.recipes:
        for seed in a.seeds:
            run = Path(a.out) / f"{r}-seed{seed}"
            f = run / "report" / "report.json"
            if not f.is_file():
                continue
            doc = json.loads(f.read_text())
            main_reps.setdefault(r, []).append(doc)
            for i, sigma in enumerate(a.cert_sigmas):
                g = f if i == 0 else run / f"report-sigma{sigma:g}" / "report.json"
                if g.is_file():
                    d = json.loads(g.read_text())["suites"]["certified"]["per_sigma"].get(str(float(sigma)))
                    if d is not None:
                        cert.setdefault(str(float(sigma)), {}).setdefault(r, []).append(d)
    return main_reps, cert


def _curve_at(curve: dict, grid: list[float]) -> list[float]:
    """The certified-accuracy step function (non-increasing in r) at ``grid`` from a stored curve."""
    import numpy as np

    rr, acc = np.asarray(curve["radii"]), np.asarray(curve["accuracy"])
    idx = np.searchsorted(rr, np.asarray(grid) + 1e-9, side="right") - 1
    return [float(acc[i]) if i >= 0 else float(acc[0]) for i in idx]


def make_figure(a, cert: dict[str, dict[str, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sigmas = list(cert)
    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.6 * len(sigmas), 3.4), squeeze=False)
    for ax, sigma in zip(axes[0], sigmas):
        # no radius above sigma * Phi^-1(alpha^(1/n)) can be certified with n copies
        cap = float(sigma) * statistics.NormalDist().inv_cdf(a.cert_alpha ** (1.0 / a.cert_n))
        top = cap
        grid = np.linspace(0.0, top, 201).tolist()
        for recipe, rs in cert[sigma].items():
            curves = np.array([_curve_at(c["curve"], grid) for c in rs])
            m = curves.mean(0)
            ax.plot(grid, 100 * m, label=f"{recipe} ({len(rs)} seeds)", drawstyle="steps-post")
            if len(rs) > 1:
                ax.fill_between(grid, 100 * curves.min(0), 100 * curves.max(0), alpha=0.15, step="post")
        ax.set_title(f"denoised smoothing, sigma = {float(sigma):g}")
        ax.set_xlabel("l2 radius ([0, 1] pixels)")
        ax.set_ylabel("certified accuracy (%)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Fashion-MNIST {a.model}, fmnist-ddpm denoiser: mean over seeds (band: min..max)\n"
                 f"first {a.cert_images} test images, n = {a.cert_n}, x axis up to the largest certifiable radius",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_block(a, main_reps: dict[str, list[dict]], cert: dict[str, dict[str, list[dict]]]) -> str:
    recipes = [r for r in a.recipes if r in main_reps]
    out: list[str] = []
    # certified accuracy
    radii = ["0.0", "0.25", "0.5"]
    head = "| recipe | seeds | clean acc. (%) | " + " | ".join(
        f"σ={float(s):g}: r={float(r):g}" for s in cert for r in radii) + " | " + " | ".join(
        f"σ={float(s):g}: abstain" for s in cert) + " |"
    out += ["Certified accuracy (%) with denoised smoothing through `fmnist-ddpm` (l2 radius r in [0, 1] pixel units; "
            "r = 0 is the smoothed classifier's accuracy, abstentions counted as errors):", "", head,
            "|---|---:|" + "---:|" * (1 + len(cert) * (len(radii) + 1))]
    for r in recipes:
        cells = [_ms([d["suites"]["clean"]["accuracy"]["value"] for d in main_reps[r]], digits=2)]
        for s in cert:
            cells += [_ms([c["certified_accuracy"][rad]["value"] for c in cert[s].get(r, [])]) for rad in radii]
        cells += [_ms([c["abstain_rate"]["value"] for c in cert[s].get(r, [])]) for s in cert]
        n = min([len(main_reps[r])] + [len(cert[s].get(r, [])) for s in cert])
        out.append(f"| {r} | {n} | " + " | ".join(cells) + " |")
    # OOD
    d0 = next(iter(main_reps.values()))[0]["suites"]["ood"]
    sets = list(d0["sets"])
    kinds = {k: v["kind"] for k, v in d0["sets"].items()}
    methods = list(d0["methods"])
    for metric, label in (("auroc", "AUROC (%, higher is better)"), ("fpr95", "FPR at 95% TPR (%, lower is better)")):
        out += ["", f"OOD detection with the MSP score, {label}; in-distribution: {d0['in_distribution']}:", "",
                "| recipe | " + " | ".join(f"{k} ({kinds[k]})" for k in sets) + " |",
                "|---|" + "---:|" * len(sets)]
        for r in recipes:
            out.append(f"| {r} | " + " | ".join(
                _ms([d["suites"]["ood"]["methods"]["msp"]["per_set"][k][metric]["value"] for d in main_reps[r]])
                for k in sets) + " |")
    out += ["", "Mean AUROC (%) over the far sets / on the near set, per score:", "",
            "| recipe | " + " | ".join(f"{m} far | {m} near" for m in methods) + " |",
            "|---|" + "---:|" * (2 * len(methods))]
    for r in recipes:
        cells = []
        for m in methods:
            for kind in ("far", "near"):
                cells.append(_ms([d["suites"]["ood"]["methods"][m].get(f"mean_auroc_{kind}") for d in main_reps[r]]))
        out.append(f"| {r} | " + " | ".join(cells) + " |")
    # calibration
    c0 = next(iter(main_reps.values()))[0]["suites"]["calibration"]
    out += ["", "Calibration (%, lower is better): ECE (15 equal-width bins) and RMS calibration error (bins of 100 "
            "samples sorted by confidence, as in the AugMix / IPMix code), on the clean test images and on "
            "Fashion-MNIST-C (pooled over all 75 sets, and the per-corruption value averaged over the 15 "
            "corruptions as AugMix / IPMix report it):", "",
            "| recipe | clean ECE | clean RMS | -C ECE (pooled) | -C RMS (pooled) | -C ECE (mean over corr.) | "
            "-C RMS (mean over corr.) | clean NLL | -C acc. (%) |",
            "|---|" + "---:|" * 8]
    for r in recipes:
        ds = [d["suites"]["calibration"] for d in main_reps[r]]
        cells = [_ms([c["clean"]["ece"]["value"] for c in ds], digits=2),
                 _ms([c["clean"]["rms"]["value"] for c in ds], digits=2),
                 _ms([c["corrupted"]["ece"]["value"] for c in ds], digits=2),
                 _ms([c["corrupted"]["rms"]["value"] for c in ds], digits=2),
                 _ms([c["corrupted_mean_over_corruptions"]["ece"]["value"] for c in ds], digits=2),
                 _ms([c["corrupted_mean_over_corruptions"]["rms"]["value"] for c in ds], digits=2),
                 _ms([c["clean"]["nll"]["value"] for c in ds], scale=1.0, digits=3),
                 _ms([c["corrupted"]["accuracy"]["value"] for c in ds], digits=2)]
        out.append(f"| {r} | " + " | ".join(cells) + " |")
    out.append(f"\n(-C: {c0['corrupted']['pooled_over']}.)")
    return "\n".join(out)


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    command = "OMP_NUM_THREADS=1 python examples/fmnist_eval_table.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.stage in ("all", "train"):
        FR.build_corruptions(_train_ns(a), out)
        jobs = [(r, s) for r in FR.COST_ORDER if r in a.recipes for s in a.seeds]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for f in [pool.submit(train_one, a, r, s) for r, s in jobs]:
                f.result()
    if a.stage in ("all", "precompute"):
        den = cached_denoiser(a.denoiser, Path(a.out) / ("denoiser-cache" + "-bf16" * a.denoiser_bf16),
                              a.denoiser_bf16)
        for sigma in a.cert_sigmas:
            precompute(a, sigma, den)
    if a.stage in ("all", "report"):
        den = cached_denoiser(a.denoiser, Path(a.out) / ("denoiser-cache" + "-bf16" * a.denoiser_bf16),
                              a.denoiser_bf16)
        folders = [out / f"{r}-seed{s}" for r in a.recipes for s in a.seeds]
        for i, sigma in enumerate(a.cert_sigmas):
            with ThreadPoolExecutor(max_workers=a.jobs) as pool:
                for f in [pool.submit(report_one, a, d, sigma, i == 0, den) for d in folders]:
                    f.result()
    if a.stage in ("all", "table"):
        main_reps, cert = _load_reports(a)
        if not main_reps:
            print("no reports yet")
            return 1
        wall = time.perf_counter() - t_start
        d0 = next(iter(main_reps.values()))[0]
        st = d0["settings"]
        sizes = (f"Reports: `robaug.eval.report(model, 'fashion_mnist', quick=True, denoiser=<fmnist-ddpm>, "
                 f"settings=...)` per model with suites {a.suites} (for σ ≠ {a.cert_sigmas[0]:g} a second report "
                 f"with the certified suite only); certification of the first {st['cert_images']} test images, "
                 f"n0 = {st['cert_n0']}, n = {st['cert_n']}, alpha = {st['cert_alpha']} (Cohen et al.'s CERTIFY; "
                 f"with n = {st['cert_n']} no radius above σ·Φ⁻¹(alpha^(1/n)) can be certified), "
                 f"{st['cert_batch_size']} noisy copies per call, seed {st['seed']}; the denoiser "
                 f"{'under bfloat16 autocast (as in the DiffAug training runs)' if a.denoiser_bf16 else 'in float32'}; "
                 f"clean accuracy and calibration on {st['clean_images']:,} test images; OOD with "
                 f"{st['ood_images']:,} in-distribution images and up to {st['ood_images']:,} per OOD set; "
                 f"bootstrap intervals with {st['n_boot']} resamples (in report.json).")
        block = (f"Measured by\n\n```bash\n{command}\n```\n\n(this invocation: {wall / 60:.1f} minutes of wall time; "
                 f"it reuses the "
                 f"runs and report suites computed by earlier invocations of this script with the same sizes) "
                 f"({os.cpu_count()} CPU cores shared with other jobs, {a.jobs} jobs x {a.threads} thread). Models: "
                 f"the first table's training runs (`{a.model}` {a.model_kwargs}, {a.epochs} epoch(s), seeds "
                 f"{', '.join(map(str, a.seeds))}; read from the same --out folder, trained by examples/"
                 f"fmnist_results.py's arguments where missing), mean ± "
                 f"sample standard deviation over seeds. "
                 f"{sizes}\n\n{make_block(a, main_reps, cert)}\n")
        if a.figure:
            make_figure(a, cert, Path(a.figure))
            rel = os.path.relpath(a.figure, Path(a.doc).parent) if a.doc else a.figure
            block += f"\n![certified accuracy vs radius]({rel})\n"
        (out / "table.md").write_text(block)
        print(block)
        if a.doc:
            replace_block(Path(a.doc), "fmnist-eval", block)
            print(f"updated {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
