#!/usr/bin/env python
"""Each paper's claim next to what the Fashion-MNIST study measured: the `fmnist-claims` block of docs/results.md.

Reads the finished runs of examples/fmnist_results.py (results.json), their reports from examples/fmnist_eval_table.py
(report/report.json, report-sigma*/report.json) and the runs of examples/fmnist_dmat_study.py, and writes one row per
claim: the paired difference "method - reference" per seed (same seed, same test images), its mean ± sd, and a
verdict: "held" when the mean is in the claimed direction by more than twice its standard error over seeds and every
seed agrees, "opposite" when it is as clearly the other way, else "within noise" ("one seed only" with one seed).

    python examples/fmnist_claims.py --table runs/fmnist-table --dmat runs/fmnist-dmat --doc docs/results.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results_doc import replace_block, verdict  # noqa: E402

Metric = Callable[[Path], "float | None"]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _value(doc: dict | None, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    if isinstance(doc, dict):
        doc = doc.get("value")
    return None if doc is None else float(doc)


def results(*keys: str) -> Metric:
    return lambda run: _value(_json(run / "results.json"), *keys)


def report(*keys: str, sigma: float | None = None) -> Metric:
    def get(run: Path) -> float | None:
        folder = "report" if sigma is None else f"report-sigma{sigma:g}"
        doc = _json(run / folder / "report.json") or (_json(run / "report" / "report.json") if sigma else None)
        if sigma is not None and doc is not None:
            return _value(doc, "suites", "certified", "per_sigma", str(float(sigma)), *keys)
        return _value(doc, "suites", *keys)

    return get


def adversarial(attack: str) -> Metric:
    return lambda run: _value(_json(run / "results.json"), "adversarial", attack, "robust_accuracy")


def claims(table: Path, dmat: Path) -> list[tuple]:
    """(paper, claim, metric label, method folder prefix, reference prefix, metric, sign, root, scale)."""
    cert = "certified_accuracy"
    # the filtered set is judged against the same number of unfiltered images (the study's cond<N> run)
    kept = int(((_json(dmat / "gen-filtered" / "manifest.json") or {}).get("selection") or {}).get("count", 5000))
    return [
        ("IPMix", "raises corruption accuracy", "-C accuracy", "ipmix", "baseline",
         results("corruption_accuracy"), +1, table),
        ("IPMix", "raises corruption accuracy (+ JSD)", "-C accuracy", "ipmix_jsd", "baseline",
         results("corruption_accuracy"), +1, table),
        ("IPMix", "lowers calibration error under corruption", "-C RMS calib. error (mean over corr.)", "ipmix",
         "baseline", report("calibration", "corrupted_mean_over_corruptions", "rms"), -1, table),
        ("IPMix", "lowers calibration error on clean data", "clean RMS calib. error", "ipmix", "baseline",
         report("calibration", "clean", "rms"), -1, table),
        ("IPMix", "improves anomaly detection", "mean far-OOD AUROC (MSP)", "ipmix", "baseline",
         report("ood", "methods", "msp", "mean_auroc_far"), +1, table),
        ("DiffAug", "raises corruption accuracy", "-C accuracy", "diffaug", "baseline",
         results("corruption_accuracy"), +1, table),
        ("DiffAug", "adds to IPMix + JSD", "-C accuracy", "diffaug_ipmix_jsd", "ipmix_jsd",
         results("corruption_accuracy"), +1, table),
        ("DiffAug", "DE raises -C accuracy of DiffAug models", "-C acc., DE vs plain (same images)", "diffaug",
         None, lambda run: _d(run, "corruption_accuracy"), +1, table),
        ("DiffAug", "raises certified accuracy (denoised smoothing)", "certified acc. σ=0.25, r=0.25", "diffaug",
         "baseline", report(cert, "0.25", sigma=0.25), +1, table),
        ("DiffAug", "raises certified accuracy (denoised smoothing)", "certified acc. σ=0.5, r=0.5", "diffaug",
         "baseline", report(cert, "0.5", sigma=0.5), +1, table),
        ("DiffAug", "improves OOD detection", "near-OOD AUROC (MSP)", "diffaug", "baseline",
         report("ood", "methods", "msp", "mean_auroc_near"), +1, table),
        ("DiffAug", "improves OOD detection", "mean far-OOD AUROC (MSP)", "diffaug", "baseline",
         report("ood", "methods", "msp", "mean_auroc_far"), +1, table),
        ("DM-Improves-AT", "generated data raise robust accuracy", "APGD-CE + APGD-T accuracy", "trades-cond",
         "trades-real", adversarial("autoattack"), +1, dmat),
        ("DM-Improves-AT", "class-conditional beats unconditional", "APGD-CE + APGD-T accuracy", "trades-cond",
         "trades-uncond", adversarial("autoattack"), +1, dmat),
        ("Contrastive-DP", "contrastive guidance raises robust accuracy", "APGD-CE + APGD-T accuracy",
         "trades-contrastive", "trades-cond", adversarial("autoattack"), +1, dmat),
        ("DM-Improves-AT", "filtering by classifier confidence helps", f"APGD-CE + APGD-T acc. ({kept:,} images)",
         "trades-filtered", f"trades-cond{kept}", adversarial("autoattack"), +1, dmat),
    ]


def _d(run: Path, key: str) -> float | None:
    """DE minus the same model evaluated plainly on the same images."""
    de = (_json(run / "results.json") or {}).get("diffaug_ensemble")
    if not de or key not in de:
        return None
    return float(de[key]) - float(de[f"plain_{key}"])


def paired(root: Path, method: str, reference: str | None, metric: Metric, seeds: list[int]) -> list[float]:
    out = []
    for s in seeds:
        a = metric(root / f"{method}-seed{s}")
        b = 0.0 if reference is None else metric(root / f"{reference}-seed{s}")
        if a is not None and b is not None:
            out.append(a - b)
    return out


def make_block(a) -> tuple[str, list[dict]]:
    rows = ["| paper | claim | measured as | method − reference | difference (points), mean ± sd | seeds | "
            "verdict |", "|---|---|---|---|---:|---:|---|"]
    out = []
    for paper, claim, label, method, ref, metric, sign, root in claims(Path(a.table), Path(a.dmat)):
        diffs = paired(root, method, ref, metric, a.seeds)
        v = verdict(diffs, sign)
        out.append({"paper": paper, "claim": claim, "metric": label, "method": method, "reference": ref,
                    "differences": diffs, "verdict": v})
        ms = "n/a" if not diffs else (f"{100 * statistics.fmean(diffs):+.2f} ± "
                                      f"{100 * statistics.stdev(diffs) if len(diffs) > 1 else 0.0:.2f}")
        name = method.removeprefix("trades-") + (" − " + ref.removeprefix("trades-") if ref else " DE − plain")
        rows.append(f"| {paper} | {claim} | {label} | {name} | {ms} | {len(diffs)} | {v} |")
    return "\n".join(rows) + "\n", out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="runs/fmnist-table", help="--out of fmnist_results.py / fmnist_eval_table.py")
    p.add_argument("--dmat", default="runs/fmnist-dmat", help="--out of fmnist_dmat_study.py")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--doc", default=None, help="markdown file whose fmnist-claims block is replaced")
    a = p.parse_args(argv)
    block, out = make_block(a)
    command = "python examples/fmnist_claims.py " + " ".join(argv if argv is not None else sys.argv[1:])
    block = f"Measured by\n\n```bash\n{command}\n```\n\n{block}"
    print(block)
    Path(a.table).mkdir(parents=True, exist_ok=True)
    (Path(a.table) / "claims.json").write_text(json.dumps(out, indent=2))
    if a.doc:
        replace_block(Path(a.doc), "fmnist-claims", block)
        print(f"updated {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
