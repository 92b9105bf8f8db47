"""``robaug eval RUN_DIR_OR_CHECKPOINT``: the robustness report (:func:`robaug.eval.report`) of a run folder written
by ``robaug train`` (``config.json`` + ``model.safetensors``), of its ``model.safetensors`` or of its
``checkpoint.pt`` (the EMA weights when the run keeps an EMA, as the final export does).

Examples::

    robaug eval runs/fmnist-diffaug --quick
    robaug eval runs/fmnist-diffaug --suites certified --denoiser fmnist-ddpm --set cert_sigmas=[0.25,0.5]
    robaug eval runs/cifar10-ipmix --corruption-root data/CIFAR-10-C --ood svhn=data/svhn_test.npy --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["main_eval", "load_run"]


def load_run(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, Path]:
    """Rebuild a ``robaug train`` run's classifier (it takes [0, 1] images) from a run folder, its
    ``model.safetensors`` or its ``checkpoint.pt``. Returns ``(model in eval mode, TrainConfig, run folder)``."""
    from robaug.data.datasets import load_dataset
    from robaug.recipes.train import TrainConfig, build_model

    p = Path(path)
    run = p if p.is_dir() else p.parent
    if p.is_dir():
        weights = run / "model.safetensors"
        if not weights.is_file():
            ck = run / "checkpoint.pt"
            if not ck.is_file():
                raise FileNotFoundError(f"{run}: no model.safetensors or checkpoint.pt; is it a `robaug train` run "
                                        "folder? (Other models: use robaug.eval.report(model, ...) from Python)")
            weights = ck
    elif p.is_file():
        weights = p
    else:
        raise FileNotFoundError(f"{p} does not exist")
    state: dict[str, torch.Tensor]
    cfg_dict: dict[str, Any] | None = None
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    elif weights.suffix in (".pt", ".pth"):
        ck = torch.load(weights, map_location="cpu", weights_only=True)  # never unpickles code
        cfg_dict = ck.get("config")
        ema = ck.get("ema")
        if ema:
            state = {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
        else:
            state = ck["model"]
    else:
        raise ValueError(f"{weights}: expected a run folder, model.safetensors or checkpoint.pt")
    if cfg_dict is None:
        for name in ("config.json", "results.json"):
            f = run / name
            if f.is_file():
                d = json.loads(f.read_text())
                cfg_dict = d.get("config", d) if name == "results.json" else d
                break
    if cfg_dict is None:
        raise FileNotFoundError(f"{run}: no config.json / results.json next to the weights, so the architecture is "
                                "unknown; rebuild the model in Python and call robaug.eval.report(model, ...)")
    cfg = TrainConfig.from_dict(cfg_dict)
    _, info = load_dataset(cfg.dataset, cfg.data_root, train=False, img_size=cfg.img_size)
    model = build_model(cfg, info)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, run


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    from .report import ReportSettings

    fields = set(ReportSettings.__dataclass_fields__)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in fields:
            raise SystemExit(f"--set: unknown setting {k!r}; settings: {', '.join(sorted(fields))}")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    from .report import SUITES

    p = argparse.ArgumentParser(prog="robaug eval", description="Robustness report of a trained classifier: "
                                "clean, corruption, adversarial and certified accuracy, OOD detection, calibration, "
                                "with 95% intervals (report.json, report.md, figures/).",
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return p


def main_eval(argv: Sequence[str] | None = None) -> int:
    from .report import SUITES, report

    args = build_parser().parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise SystemExit(f"--suites: unknown {bad}; choose from {', '.join(SUITES)}")
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg, run = load_run(args.run, dev)
    ood = {}
    for item in args.ood:
        if "=" not in item:
            raise SystemExit(f"--ood expects NAME=PATH, got {item!r}")
        k, v = item.split("=", 1)
        ood[k] = v
    out = Path(args.out) if args.out else run / "report"
    doc = report(model, cfg.dataset, suites=suites, out=out, quick=args.quick, settings=_parse_set(args.set),
                 denoiser=args.denoiser, data_root=args.data_root or cfg.data_root,
                 corruption_root=args.corruption_root or cfg.corruption_root, ood_folders=ood,
                 cache_dir=args.cache_dir or cfg.cache_dir, device=dev, name=f"{run.name} ({cfg.recipe})",
                 progress=not args.no_progress, figures=not args.no_figures, img_size=cfg.img_size)
    reused = f" (reused: {', '.join(doc['reused_suites'])})" if doc["reused_suites"] else ""
    print(f"wrote {out / 'report.md'} and {out / 'report.json'} in {doc['seconds']:.0f}s{reused}")
    return 0


if __name__ == "__main__":
    sys.exit(main_eval())
