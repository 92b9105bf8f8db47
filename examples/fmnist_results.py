#!/usr/bin/env python
"""Reproduce the Fashion-MNIST results table of docs/results.md (CPU, about half an hour on 2 cores).

Every row trains the same small CNN for the same number of epochs with one recipe, for several seeds, and
reports clean test accuracy and accuracy on a Fashion-MNIST-C built with robaug.eval (the 15 CIFAR-10-C corruptions x 5
severities on the first --corruption-images test images; re-implemented corruptions, see docs/results.md):

    baseline            CE(f(x))                                   (random crop + flip, as in every row)
    ipmix               CE(f(IPMix(x)))
    ipmix_jsd           CE(f(x)) + 12 JS(x, IPMix1(x), IPMix2(x))
    diffaug             CE(f(x)) + CE(f(DiffAug(x)))               (built-in fmnist-ddpm denoiser)
    diffaug_ipmix_jsd   CE(f(x)) + CE(f(DiffAug(x))) + 12 JS(x, IPMix1(x), IPMix2(x))
    diffaug + DE        the diffaug models, evaluated with the DiffAug Ensemble

Each run is one `examples/train_classifier.py` process (resumable: rerunning this script skips finished runs
and continues interrupted ones); --jobs runs that many at once with --threads threads each.

    OMP_NUM_THREADS=1 python examples/fmnist_results.py --out runs/fmnist-table --seeds 0 1 2 --jobs 2 \\
        --doc docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from _results_doc import mean_sd as _ms  # noqa: E402
from _results_doc import replace_block  # noqa: E402

TRAIN = ROOT / "examples" / "train_classifier.py"
RECIPES = ["baseline", "ipmix", "ipmix_jsd", "diffaug", "diffaug_ipmix_jsd"]
# longest first, so that the parallel jobs finish together
COST_ORDER = ["diffaug_ipmix_jsd", "diffaug", "ipmix_jsd", "ipmix", "baseline"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fmnist-table", help="folder for the runs, the table and the -C set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    p.add_argument("--epochs", type=int, default=1, help="training epochs of every run (the shared budget)")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--model-kwargs", default='{"width": 16}')
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--corruption-images", type=int, default=1000, help="test images per corruption and severity")
    p.add_argument("--de-images", type=int, default=40, help="images per test set for the DiffAug Ensemble")
    p.add_argument("--de-clean-images", type=int, default=1000, help="clean test images for the DiffAug Ensemble")
    p.add_argument("--de-timesteps", default="0:500:50", help="DE timesteps (paper: 0:500:50)")
    p.add_argument("--cost-steps", type=int, default=25,
                   help="steps per recipe of the side-by-side training-throughput measurement (0: skip)")
    p.add_argument("--denoiser", default="fmnist-ddpm")
    p.add_argument("--cache-dir", default=None, help="where the Fashion-MNIST-C set is built (default <out>/cache)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--doc", default=None, help="markdown file whose results block is replaced (docs/results.md)")
    p.add_argument("--stage", choices=["all", "table"], default="all",
                   help="table: only tabulate the runs finished so far (no training; for a study still running)")
    p.add_argument("--train-subset", type=int, default=None, help="(for smoke tests) first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="(for smoke tests) first N test images")
    return p.parse_args(argv)


def run_args(a, recipe: str, seed: int, out: Path) -> list[str]:
    args = [sys.executable, str(TRAIN), "--preset", "fmnist-cpu", "--recipe", recipe, "--seed", str(seed),
            "--epochs", str(a.epochs), "--model", a.model, "--model-kwargs", a.model_kwargs,
            "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--denoiser", a.denoiser, "--diffaug-bf16",
            "--corruption-images", str(a.corruption_images), "--cache-dir", str(_cache(a, out)),
            "--out-dir", str(out / f"{recipe}-seed{seed}"), "--no-progress", "--ckpt-every", "100",
            "--log-every", "50"]
    if recipe == "diffaug":
        args += ["--eval-de", "--de-images", str(a.de_images), "--de-clean-images", str(a.de_clean_images),
                 "--de-timesteps", a.de_timesteps]
    if a.train_subset:
        args += ["--train-subset", str(a.train_subset)]
    if a.test_subset:
        args += ["--test-subset", str(a.test_subset)]
    return args


def _cache(a, out: Path) -> Path:
    return Path(a.cache_dir) if a.cache_dir else out / "cache"


def build_corruptions(a, out: Path) -> str:
    """Build the Fashion-MNIST-C set once, before the parallel runs (they then only read it)."""
    from robaug.data.datasets import load_dataset
    from robaug.recipes.evaluate import corruption_benchmark

    test, info = load_dataset("fashion_mnist", train=False, subset=a.test_subset)
    t0 = time.perf_counter()
    bench, note = corruption_benchmark(info, test, num_images=a.corruption_images, cache_dir=_cache(a, out),
                                       progress=True)
    print(f"{note}: ready in {time.perf_counter() - t0:.0f}s ({bench})", flush=True)
    return note


def run_one(a, recipe: str, seed: int, out: Path) -> tuple[dict, bool]:
    """Run (or resume, or reuse) one training run; returns its results and whether they existed already."""
    folder = out / f"{recipe}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    existed = (folder / "results.json").is_file()
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    with open(folder / "log.txt", "a") as log:
        proc = subprocess.run(run_args(a, recipe, seed, out), env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{recipe} seed {seed} failed (exit {proc.returncode}); see {folder / 'log.txt'}")
    res = json.loads((folder / "results.json").read_text())
    print(f"  {recipe:18s} seed {seed}: clean {100 * res['clean_accuracy']:.2f}%  "
          f"-C {100 * res['corruption_accuracy']:.2f}%  ({time.perf_counter() - t0:.0f}s"
          f"{', finished earlier' if existed else ''})", flush=True)
    return res, existed


def measure_costs(a) -> str:
    """Training throughput of every recipe, measured side by side in this process (same thread count)."""
    import tempfile

    import torch

    from robaug.recipes import TrainConfig, train

    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in a.recipes:
            cfg = TrainConfig(recipe=recipe, model=a.model, model_kwargs=json.loads(a.model_kwargs),
                              batch_size=a.batch_size, steps=a.cost_steps, train_subset=a.batch_size * a.cost_steps,
                              test_subset=a.batch_size, denoiser=a.denoiser, diffaug_bf16=True, lr=a.lr,
                              eval_corruptions=False, eval_every_epoch=False, progress=False, ckpt_every=0,
                              out_dir=str(Path(tmp) / recipe), resume=False)
            rows.append((recipe, train(cfg)["train_images_per_s"]))
    base = dict(rows).get("baseline", rows[0][1])
    lines = [f"| recipe | training images/s ({a.threads} thread) | cost relative to baseline |", "|---|---:|---:|"]
    lines += [f"| {r} | {ips:.0f} | {base / ips:.1f}x |" for r, ips in rows]
    return "\n".join(lines)


def _family(res: dict) -> dict[str, float]:
    from robaug.eval.corruptions import CORRUPTION_FAMILIES

    groups: dict[str, list[float]] = {}
    for c, acc in res["corruption"]["per_corruption_accuracy"].items():
        groups.setdefault(CORRUPTION_FAMILIES.get(c, "other"), []).append(acc)
    return {f: statistics.fmean(v) for f, v in groups.items()}


def make_tables(a, results: dict[str, list[dict]]) -> tuple[str, dict]:
    families = ["noise", "blur", "weather", "digital"]
    head = ("| recipe | loss | seeds | clean acc. (%) | Fashion-MNIST-C acc. (%) | "
            + " | ".join(f"{f} (%)" for f in families) + " |")
    lines = [head, "|" + "---|" * 2 + "---:|" * (3 + len(families))]
    summary: dict[str, dict] = {}
    for recipe in a.recipes:
        rs = results.get(recipe, [])
        if not rs:
            continue
        fam = [_family(r) for r in rs]
        row = {
            "clean": [r["clean_accuracy"] for r in rs],
            "corruption": [r["corruption_accuracy"] for r in rs],
            "families": {f: [x[f] for x in fam if f in x] for f in families},
            "train_seconds": [r["train_seconds"] for r in rs],
            "seeds": [r["config"]["seed"] for r in rs],
        }
        summary[recipe] = row
        lines.append(f"| {recipe} | {rs[0]['recipe_loss']} | {len(rs)} | {_ms(row['clean'])} | "
                     f"{_ms(row['corruption'])} | "
                     + " | ".join(_ms(row["families"][f]) for f in families) + " |")
    de_runs = [r["diffaug_ensemble"] for r in results.get("diffaug", []) if "diffaug_ensemble" in r]
    de_note = ""
    if de_runs:
        de = de_runs[0]
        summary["diffaug+DE"] = {
            "clean": [d["clean_accuracy"] for d in de_runs],
            "corruption": [d["corruption_accuracy"] for d in de_runs],
            "plain_clean": [d["plain_clean_accuracy"] for d in de_runs],
            "plain_corruption": [d["plain_corruption_accuracy"] for d in de_runs],
            "families": {f: [_family(d)[f] for d in de_runs] for f in families},
            "images": de["images"], "timesteps": de["timesteps"],
        }
        s = summary["diffaug+DE"]
        lines.append(f"| diffaug + DE | mean softmax over DiffAug_t, t in {{{', '.join(map(str, de['timesteps']))}}} | "
                     f"{len(de_runs)} | "
                     f"{_ms(s['clean'])} | {_ms(s['corruption'])} | "
                     + " | ".join(_ms(s["families"][f]) for f in families) + " |")
        de_note = (f"\nThe DE row is measured on the first {de.get('clean_images', de['images'])} "
                   f"clean test images and "
                   f"the first {de['images']} images of every corrupted set (the ensemble costs "
                   f"{len(de['timesteps']) - 1} denoiser passes per image). The same diffaug models evaluated plainly "
                   f"on exactly those images: clean {_ms(s['plain_clean'])}, Fashion-MNIST-C "
                   f"{_ms(s['plain_corruption'])}.\n")
    # per-corruption table (mean over seeds)
    any_run = next(iter(results.values()))[0]
    names = list(any_run["corruption"]["per_corruption_accuracy"])
    per = ["| corruption | " + " | ".join(r for r in a.recipes if results.get(r)) + " |",
           "|---|" + "---:|" * sum(1 for r in a.recipes if results.get(r))]
    for c in names:
        cells = []
        for recipe in a.recipes:
            rs = results.get(recipe)
            if rs:
                cells.append(f"{100 * statistics.fmean(r['corruption']['per_corruption_accuracy'][c] for r in rs):.1f}")
        per.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + de_note, {"summary": summary, "per_corruption_table": "\n".join(per)}


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    command = "OMP_NUM_THREADS=1 python examples/fmnist_results.py " + " ".join(
        __import__("shlex").quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    note = build_corruptions(a, out)
    # seed-major (every recipe's seed 0 first), the longest recipes first within a seed: an interrupted study
    # has whole seeds of every row, and parallel jobs finish together
    jobs = [(r, s) for s in a.seeds for r in COST_ORDER if r in a.recipes]
    results: dict[str, list[dict]] = {}
    reused = 0
    if a.stage == "table":  # tabulate the finished runs only, start nothing
        jobs = [(r, s) for r, s in jobs if (out / f"{r}-seed{s}" / "results.json").is_file()]
        for r, s in jobs:
            results.setdefault(r, []).append(json.loads((out / f"{r}-seed{s}" / "results.json").read_text()))
        reused = len(jobs)
        if not results:
            print("no finished runs yet")
            return 1
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = {pool.submit(run_one, a, r, s, out): (r, s) for r, s in jobs if a.stage == "all"}
        for fut, (r, s) in futures.items():
            res, existed = fut.result()
            results.setdefault(r, []).append(res)
            reused += existed
    runs_wall = time.perf_counter() - t0
    costs = measure_costs(a) if a.cost_steps > 0 else ""
    for r in results:
        results[r].sort(key=lambda res: res["config"]["seed"])
    wall = time.perf_counter() - t0
    table, extra = make_tables(a, results)
    when = (f"in {runs_wall / 60:.1f} minutes of wall time" if not reused else
            f"(this invocation: {runs_wall / 60:.1f} minutes of wall time; {reused} of the {len(jobs)} runs had been "
            "finished by an earlier invocation of the same command and were reused, re-evaluated where the "
            "evaluation settings changed)")
    first = next(iter(results.values()))[0]
    cfg = first["config"]
    cpu_info = f"{os.cpu_count()} CPU cores, {a.jobs} runs in parallel x {a.threads} thread(s)"
    block = (
        f"Measured by\n\n```bash\n{command}\n```\n\n"
        f"{when} ({cpu_info}). Every row: `{a.model}` "
        f"({a.model_kwargs}), {a.epochs} epoch(s) of the {first['train_images']:,} training images, "
        f"batch {a.batch_size}, SGD-Nesterov "
        f"lr {a.lr} with {cfg['warmup_steps']} warm-up steps and cosine decay, weight decay {cfg['weight_decay']}, "
        f"random crop (pad 2) + flip, seeds {', '.join(map(str, a.seeds))} (mean ± sample standard deviation). "
        f"Clean accuracy on the {first['num_test_images']:,} test images; corrupted accuracy "
        f"on {note}.\n\n{table}\n"
        f"Accuracy per corruption (%, mean over seeds):\n\n{extra['per_corruption_table']}\n"
        + (f"\nTraining cost, measured side by side after the runs ({a.cost_steps} steps of each recipe, the same "
           f"network and batch):\n\n{costs}\n" if costs else "")
    )
    (out / "table.md").write_text(block)
    (out / "summary.json").write_text(json.dumps({"wall_seconds": wall, "command": command, **extra}, indent=2))
    print(block)
    if a.doc:
        replace_block(Path(a.doc), "fmnist-results", block)
        print(f"updated {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
