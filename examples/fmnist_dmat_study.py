#!/usr/bin/env python
"""DM-Improves-AT and Contrastive-DP measured on Fashion-MNIST (CPU): does generated data improve adversarial
training when it outnumbers the real data, does class-conditional generation beat unconditional, and does
contrastive guidance make the generated images more useful? The block `fmnist-dmat` of docs/results.md.

Every row trains the same network (`cnn_mlp`, width 16) with TRADES (l_inf eps 0.1, 10 steps of 0.025, beta 5,
label smoothing 0.1) for the same number of steps of batch 128 on the same 5,000 real training images; the rows
differ only in the generated images mixed into every batch (70% of it, as in the paper):

    real          no generated images
    cond          10,000 images of the built-in fmnist-ddpm model, class-conditional (label j % 10), no guidance
    uncond        10,000 images of the same model sampled without a class (its null label), labelled by a
                  standard classifier (DM-Improves-AT's unconditional arm)
    contrastive   the cond images' seeds and classes, sampled with contrastive guidance (Contrastive-DP: hard-negative
                  loss on an adversarially trained encoder, the real row's seed-0 model, for t >= 400 of 1000;
                  scale 3000 in x0 space, chosen by examples/contrastive_scale_sweep.py)
    filtered      DM-Improves-AT's confidence filter: 10,000 cond-sampled images (the same seeds), of which the
                  half a standard classifier is most confident in, per class, are kept (5,000; compare with cond5000,
                  the first 5,000 unfiltered images)

All sets use the same sampler (Heun, 10 steps = 19 network evaluations, bfloat16 weights). Each model is evaluated
on the 10,000 clean test images, PGD-20 and AutoAttack's APGD-CE + APGD-T (9 targets, 100 iterations, the
authors' code) on the first 2,000 test images. Every step is a separate process and resumable: rerunning the
command skips finished steps and continues interrupted ones from their last checkpoint or shard.

    OMP_NUM_THREADS=1 python examples/fmnist_dmat_study.py --out runs/fmnist-dmat --seeds 0 1 2 \\
        --doc docs/results.md --figure docs/img/dmat_robust_accuracy.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results_doc import mean_sd as _ms  # noqa: E402
from _results_doc import replace_block, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "train_classifier.py"
ROWS = ["real", "cond", "uncond", "contrastive", "filtered"]
MODEL = ["--model", "cnn_mlp", "--model-kwargs", '{"width": 16}']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fmnist-dmat", help="folder for the generated sets and the runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every row")
    p.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    p.add_argument("--real", type=int, default=5000, help="real training images (the first N)")
    p.add_argument("--generated", type=int, default=10000, help="generated images per set")
    p.add_argument("--curve", type=int, nargs="*", default=[2500, 5000],
                   help="extra cond runs on the first N generated images (robust accuracy vs N); after the rows")
    p.add_argument("--keep-fraction", type=float, default=0.5,
                   help="filtered row: share of the generated set kept per class by the labeller's confidence")
    p.add_argument("--steps", type=int, default=500, help="TRADES steps of batch 128 per run")
    p.add_argument("--fraction", type=float, default=0.7, help="share of generated images in each batch")
    p.add_argument("--eps", type=float, default=0.1, help="l_inf radius of training and evaluation")
    p.add_argument("--adv-images", type=int, default=2000, help="test images attacked (the first N)")
    p.add_argument("--gen-steps", type=int, default=10, help="Heun steps of the sampler (2N - 1 evaluations)")
    p.add_argument("--gen-batch", type=int, default=250, help="images per sampler call (the contrastive batch)")
    p.add_argument("--contrastive-scale", type=float, default=3000.0,
                   help="x0-space guidance scale; 100 (robaug's default) changed the images by 0.7 grey levels here, "
                        "see examples/contrastive_scale_sweep.py")
    p.add_argument("--contrastive-sigma-min", type=float, default=2.04,
                   help="guide only for sigma >= this (2.04 = t 400 of the model's 1000-step schedule, as the paper)")
    p.add_argument("--jobs", type=int, default=1, help="steps in parallel (each one process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--stage", choices=["all", "table"], default="all", help="table: only write the tables")
    p.add_argument("--doc", default=None, help="markdown file whose fmnist-dmat block is replaced")
    p.add_argument("--figure", default=None, help="PNG of robust accuracy per row and seed")
    p.add_argument("--test-subset", type=int, default=None, help="(for smoke tests) first N test images")
    p.add_argument("--dry-run", action="store_true", help="print the steps' commands and exit")
    a = p.parse_args(argv)
    if not 0.0 < a.keep_fraction <= 1.0:  # NaN fails too
        p.error(f"--keep-fraction must lie in (0, 1], got {a.keep_fraction}")
    return a


@dataclass
class Step:
    name: str
    args: list[str]
    done: Path  #: the file whose existence means "finished"
    needs: list[str] = field(default_factory=list)


def _generate(a, out: Path, name: str, extra: list[str]) -> Step:
    folder = out / name
    args = [sys.executable, "-m", "robaug", "generate", "--model", "fmnist-ddpm", "--out", str(folder),
            "--num-samples", str(a.generated), "--batch-size", str(a.gen_batch), "--shard-size", "2000",
            "--solver", "heun", "--steps", str(a.gen_steps), "--model-dtype", "bfloat16", "--seed", "0", *extra]
    return Step(name, args, folder / "done.json")


def _train(a, out: Path, name: str, seed: int, extra: list[str]) -> list[str]:
    args = [sys.executable, str(TRAIN), *MODEL, "--seed", str(seed), "--out-dir", str(out / name), "--no-progress",
            "--ckpt-every", "100", "--log-every", "50", "--no-eval-corruptions", "--no-eval-every-epoch", *extra]
    if a.test_subset:
        args += ["--test-subset", str(a.test_subset)]
    return args


def trades_name(row: str, seed: int) -> str:
    return f"trades-{row}-seed{seed}"


def curve_row(n: int) -> str:
    """The row of the cond run on the first ``n`` generated images."""
    return f"cond{n}"


def row_images(a, row: str) -> int:
    """Generated images a row trains with."""
    if row == "real":
        return 0
    if row == "filtered":
        return round(a.keep_fraction * a.generated)
    return int(row[4:]) if row.startswith("cond") and row[4:].isdigit() else a.generated


def all_rows(a) -> list[str]:
    return list(a.rows) + [curve_row(n) for n in a.curve]


def plan(a, out: Path) -> list[Step]:
    """Every step of the study, in the order a single worker runs them (dependencies first, seed-major)."""
    labeler = out / "labeler"
    steps = [
        _generate(a, out, "gen-cond", []),
        Step("labeler", _train(a, out, "labeler", 1, ["--preset", "fmnist-cpu", "--recipe", "baseline",
                                                       "--epochs", "4"]), labeler / "results.json"),
    ]
    trades = ["--preset", "fmnist-trades-cpu", "--train-subset", str(a.real), "--steps", str(a.steps),
              "--trades-eps", str(a.eps), "--eval-pgd", f"{a.eps},20", "--eval-autoattack", str(a.eps),
              "--eval-autoattack-attacks", "apgd-ce,apgd-t", "--eval-adv-images", str(a.adv_images)]
    sets = {"cond": "gen-cond", "uncond": "gen-uncond", "contrastive": "gen-contrastive", "filtered": "gen-filtered"}

    def run(row: str, seed: int) -> Step:
        extra = list(trades)
        needs = []
        if row != "real":
            kind = "cond" if row.startswith("cond") else row
            extra += ["--synthetic-data", str(out / sets[kind]), "--synthetic-fraction", str(a.fraction)]
            if row != kind:
                extra += ["--synthetic-subset", str(row_images(a, row))]
            needs.append(sets[kind])
        name = trades_name(row, seed)
        return Step(name, _train(a, out, name, seed, extra), out / name / "results.json", needs)

    encoder_seed = a.seeds[0]
    steps.append(run("real", encoder_seed))
    if "uncond" in a.rows:
        steps.append(Step("gen-uncond", _generate(a, out, "gen-uncond", [
            "--unconditional", "--filter-classifier", str(labeler), "--keep-fraction", "1"]).args,
            out / "gen-uncond" / "done.json", ["labeler"]))
    if "contrastive" in a.rows:
        steps.append(Step("gen-contrastive", _generate(a, out, "gen-contrastive", [
            "--contrastive-encoder", str(out / trades_name("real", encoder_seed)),
            "--contrastive-scale", str(a.contrastive_scale),
            "--contrastive-sigma-min", str(a.contrastive_sigma_min)]).args,
            out / "gen-contrastive" / "done.json", [trades_name("real", encoder_seed)]))
    if "filtered" in a.rows:  # the cond command plus the filter: the same images, a selection by confidence
        steps.append(Step("gen-filtered", _generate(a, out, "gen-filtered", [
            "--filter-classifier", str(labeler), "--keep-fraction", str(a.keep_fraction)]).args,
            out / "gen-filtered" / "done.json", ["labeler"]))
    for seed in a.seeds:
        for row in a.rows:
            if not (row == "real" and seed == encoder_seed):
                steps.append(run(row, seed))
    for seed in a.seeds:
        for n in a.curve:
            steps.append(run(curve_row(n), seed))
    return steps


def run_step(a, step: Step) -> float:
    """Run one step as its own process (appending to its log); returns its wall time. Generation steps write
    done.json with the manifest's summary when the folder is complete."""
    log_path = (step.done.parent / "log.txt")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), ROBAUG_QUIET="1")
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(step.args)}\n")
        log.flush()
        proc = subprocess.run(step.args, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{step.name} failed (exit {proc.returncode}); see {log_path}")
    wall = time.perf_counter() - t0
    if step.name.startswith("gen-"):
        from robaug._core.io import atomic_write_json
        from robaug.data.shards import load_manifest

        m = load_manifest(step.done.parent)
        atomic_write_json(step.done, {"seconds_this_invocation": wall, "num_samples": m["num_samples"],
                                      "selection": m.get("selection"), "sampler": m["sampler"]})
    return wall


def execute(a, steps: list[Step]) -> None:
    """Run the unfinished steps, at most --jobs at a time, each once its dependencies are finished."""
    finished = {s.name for s in steps if s.done.is_file()}
    pending = [s for s in steps if s.name not in finished]
    print(f"{len(finished)} of {len(steps)} steps finished earlier; {len(pending)} to run", flush=True)
    running: dict[Future, Step] = {}
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        while pending or running:
            for s in list(pending):
                if len(running) >= a.jobs:
                    break
                if all(n in finished for n in s.needs):
                    pending.remove(s)
                    print(f"  start {s.name}", flush=True)
                    running[pool.submit(run_step, a, s)] = s
            if not running:
                raise RuntimeError(f"steps {[s.name for s in pending]} wait for steps that are not planned")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                s = running.pop(fut)
                print(f"  done  {s.name} ({fut.result():.0f}s)", flush=True)
                finished.add(s.name)


# ------------------------------------------------------------------------------------------------------------
# tables


def _acc(res: dict, key: str) -> float | None:
    if key == "clean":
        return res.get("clean_accuracy")
    return (res.get("adversarial") or {}).get(key, {}).get("robust_accuracy")


def collect(a, out: Path) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {}
    for row in all_rows(a):
        for seed in a.seeds:
            f = out / trades_name(row, seed) / "results.json"
            if f.is_file():
                results.setdefault(row, {})[seed] = json.loads(f.read_text())
    return results


def make_block(a, out: Path, command: str) -> tuple[str, dict]:
    results = collect(a, out)
    metrics = [("clean", "clean (10k test)"), ("pgd", f"PGD-20 ({a.adv_images})"),
               ("autoattack", f"APGD-CE + APGD-T ({a.adv_images})")]
    lines = ["| row | generated images | seeds | " + " | ".join(f"{t} (%)" for _, t in metrics) + " | train s |",
             "|---|---:|---:|" + "---:|" * (len(metrics) + 1)]
    summary: dict[str, dict] = {}
    for row in all_rows(a):
        rs = results.get(row, {})
        if not rs:
            continue
        vals = {k: [v for v in (_acc(r, k) for r in rs.values()) if v is not None] for k, _ in metrics}
        summary[row] = {"seeds": sorted(rs), **vals,
                        "train_seconds": [r["train_seconds"] for r in rs.values()]}
        gen = row_images(a, row)
        lines.append(f"| {row} | {gen:,} | {len(rs)} | " + " | ".join(_ms(vals[k]) for k, _ in metrics)
                     + f" | {statistics.fmean(summary[row]['train_seconds']):.0f} |")
    claims = [
        ("DM-Improves-AT", "generated data improve adversarial training", "cond", "real"),
        ("DM-Improves-AT", "class-conditional generation beats unconditional", "cond", "uncond"),
        ("Contrastive-DP", "contrastive guidance makes generated data more useful for robust training",
         "contrastive", "cond"),
        ("DM-Improves-AT", "keeping the images a classifier is most confident in helps (same number of images)",
         "filtered", curve_row(row_images(a, "filtered"))),
    ]
    claim_lines = ["| paper | claim | comparison | paired difference, AutoAttack (points) | clean (points) | "
                   "seeds | verdict |", "|---|---|---|---:|---:|---:|---|"]
    verdicts = []
    for paper, claim, new, old in claims:
        both = sorted(set(results.get(new, {})) & set(results.get(old, {})))
        d_aa = [_acc(results[new][s], "autoattack") - _acc(results[old][s], "autoattack") for s in both]
        d_cl = [_acc(results[new][s], "clean") - _acc(results[old][s], "clean") for s in both]
        v = verdict(d_aa) if both else "not measured"
        verdicts.append({"paper": paper, "claim": claim, "new": new, "old": old, "seeds": both, "diff_aa": d_aa,
                         "diff_clean": d_cl, "verdict": v})
        claim_lines.append(f"| {paper} | {claim} | {new} − {old} | {_ms(d_aa)} | {_ms(d_cl)} | {len(both)} | {v} |")
    gen_info = ""
    for name in ("gen-cond", "gen-uncond", "gen-contrastive"):
        f = out / name / "done.json"
        if f.is_file():
            d = json.loads(f.read_text())
            gen_info += f"- `{name}`: {d['num_samples']:,} images\n"
    block = (f"Measured by\n\n```bash\n{command}\n```\n\n"
             f"Every row: `cnn_mlp` (width 16), TRADES (eps {a.eps}, 10 steps of 0.025, beta 5, label smoothing "
             f"0.1), {a.steps} steps of batch 128 on the first {a.real:,} real training images"
             f" ({100 * a.fraction:.0f}% of every batch generated in the mixed rows), SGD-Nesterov lr 0.1, 50 warm-up "
             f"steps, cosine decay, weight decay 5e-4, random crop (pad 2) + flip; seeds "
             f"{', '.join(map(str, a.seeds))}; mean ± sample standard deviation over seeds. Attacks at l_inf eps "
             f"{a.eps} on the first {a.adv_images:,} test images (one accuracy's standard error there is about "
             f"{100 * math.sqrt(0.25 / a.adv_images):.1f} points at 50%).\n\n" + "\n".join(lines) + "\n\n"
             "Each claim as a paired difference (same seed, same real images, same test images), mean ± sd over "
             "seeds; verdict 'held' when the mean is more than twice its standard error over seeds and every seed "
             "agrees in sign:\n\n" + "\n".join(claim_lines) + "\n")
    if a.figure:
        block += f"\n![robust accuracy per row]({os.path.relpath(a.figure, Path(a.doc).parent if a.doc else '.')})\n"
    return block, {"rows": summary, "claims": verdicts, "generated_sets": gen_info}


def make_figure(a, out: Path, path: Path) -> None:
    """Left: APGD accuracy vs number of generated images (cond; uncond and contrastive at the full set);
    right: clean accuracy, the same points. Dots: seeds; lines: means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = collect(a, out)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, key, title in ((axes[0], "autoattack", "APGD-CE + APGD-T accuracy (%)"),
                           (axes[1], "clean", "clean accuracy (%)")):
        curve = [r for r in ["real", *[curve_row(n) for n in sorted(a.curve)], "cond"] if r in results]
        xs, means = [], []
        for row in curve:
            vals = [100 * _acc(res, key) for res in results[row].values()]
            x = row_images(a, row)
            ax.scatter([x] * len(vals), vals, color="C0", alpha=0.5, s=14)
            xs.append(x)
            means.append(statistics.fmean(vals))
        ax.plot(xs, means, "-o", color="C0", label="class-conditional (no guidance)")
        for i, row in enumerate(r for r in ("uncond", "contrastive", "filtered") if r in results):
            vals = [100 * _acc(res, key) for res in results[row].values()]
            x = row_images(a, row) * (1.03 + 0.03 * i)
            ax.scatter([x] * len(vals), vals, color=f"C{i + 1}", alpha=0.5, s=14)
            ax.errorbar([x], [statistics.fmean(vals)], yerr=[statistics.stdev(vals) if len(vals) > 1 else 0],
                        fmt="s", color=f"C{i + 1}", capsize=3,
                        label={"uncond": "unconditional + labeller", "contrastive": "contrastive guidance",
                               "filtered": f"top {100 * a.keep_fraction:.0f}% by confidence"}[row])
        ax.set_xlabel(f"generated images (with {a.real:,} real; {100 * a.fraction:.0f}% of each batch)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"TRADES on Fashion-MNIST, cnn_mlp, {a.steps} steps, eps {a.eps}; dots: seeds", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    steps = plan(a, out)
    if a.dry_run:
        for s in steps:
            print(f"{s.name}{' (after ' + ', '.join(s.needs) + ')' if s.needs else ''}:\n  {shlex.join(s.args)}")
        return 0
    if a.stage == "all":
        out.mkdir(parents=True, exist_ok=True)
        execute(a, steps)
    argv_ = [x for x in (argv if argv is not None else sys.argv[1:])]
    command = "OMP_NUM_THREADS=1 python examples/fmnist_dmat_study.py " + shlex.join(argv_)
    block, summary = make_block(a, out, command)
    (out / "table.md").write_text(block)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if a.figure:
        make_figure(a, out, Path(a.figure))
    print(block)
    if a.doc:
        replace_block(Path(a.doc), "fmnist-dmat", block)
        print(f"updated {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
