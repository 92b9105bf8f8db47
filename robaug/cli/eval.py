"""``robaug eval RUN_DIR_OR_CHECKPOINT``: the robustness report (:func:`robaug.eval.report`) of a run folder written
by ``robaug train`` (``config.json`` + ``model.safetensors``), of its ``model.safetensors`` or of its
``checkpoint.pt`` (the EMA weights when the run keeps an EMA, as the final export does)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from ._common import make_parser, run_main

DESCRIPTION = ("Robustness report of a trained classifier: clean, corruption, adversarial and certified accuracy, OOD "
               "detection, calibration, with 95% intervals (report.json, report.md, figures/).")
EPILOG = """examples:
  robaug eval runs/fmnist-diffaug --quick
  robaug eval runs/fmnist-diffaug --suites certified --denoiser fmnist-ddpm --set cert_sigmas=[0.25,0.5]
  robaug eval runs/cifar10-ipmix --corruption-root data/CIFAR-10-C --ood svhn=data/svhn_test.npy --device cuda"""


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    from robaug.eval.report import ReportSettings

    fields = set(ReportSettings.__dataclass_fields__)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in fields:
            raise ValueError(f"--set: unknown setting {k!r}; settings: {', '.join(sorted(fields))}")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from robaug.eval.report import SUITES

    p.add_argument("run", help="a `robaug train` run folder, its model.safetensors or its checkpoint.pt")
    p.add_argument("--suites", default=",".join(SUITES), help="comma-separated suites (default: all): "
                   + ", ".join(SUITES))
    p.add_argument("--denoiser", help="denoised smoothing for the certified suite: a registry name (fmnist-ddpm, "
                   "google/ddpm-cifar10-32, ...) or a local path")
    p.add_argument("--out", help="output folder (default RUN/report)")
    p.add_argument("--quick", action="store_true", help="small sizes: minutes on a CPU for a Fashion-MNIST model")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--data-root", help="dataset folder (default: the run's)")
    p.add_argument("--corruption-root", help="published CIFAR-10-C / ImageNet-C folder (default: the run's, else a "
                   "re-implemented -C set)")
    p.add_argument("--ood", action="append", default=[], metavar="NAME=PATH",
                   help="extra OOD set (.npy or image folder); NAME:near=PATH marks it near-OOD; repeatable")
    p.add_argument("--cache-dir", help="where generated -C sets are cached")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a report setting (JSON value), e.g. cert_n=100000 or cert_sigmas=[0.25,0.5]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="no PNG figures")


def run(args: argparse.Namespace) -> int:
    import torch

    from robaug.eval.report import SUITES, report
    from robaug.recipes.trained import load_trained_model

    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise ValueError(f"--suites: unknown {bad}; choose from {', '.join(SUITES)}")
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg, run = load_trained_model(args.run, dev)
    ood = {}
    for item in args.ood:
        if "=" not in item:
            raise ValueError(f"--ood expects NAME=PATH, got {item!r}")
        k, v = item.split("=", 1)
        ood[k] = v
    out = Path(args.out) if args.out else run / "report"
    doc = report(model, cfg.dataset, suites=suites, out=out, quick=args.quick, settings=_parse_set(args.set),
                 denoiser=args.denoiser, data_root=args.data_root or cfg.data_root,
                 corruption_root=args.corruption_root or cfg.corruption_root, ood_folders=ood,
                 cache_dir=args.cache_dir or cfg.cache_dir, device=dev, name=f"{run.name} ({cfg.recipe})",
                 progress=not (args.no_progress or args.quiet), figures=not args.no_figures, img_size=cfg.img_size)
    reused = f" (reused: {', '.join(doc['reused_suites'])})" if doc["reused_suites"] else ""
    print(f"wrote {out / 'report.md'} and {out / 'report.json'} in {doc['seconds']:.0f}s{reused}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("eval", DESCRIPTION, EPILOG)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``robaug eval ARGV``: a user error prints one line and returns 2 (``--debug``: the traceback)."""
    return run_main("eval", build_parser(), run, argv)
