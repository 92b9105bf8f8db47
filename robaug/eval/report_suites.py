"""The suites of :func:`robaug.eval.report`: each runner takes the report's :class:`Context` and returns a
JSON-able dict in which every number is ``{"value", "ci95": [lo, hi], "n", "interval"}`` (see :func:`num`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .intervals import bootstrap_ci, wilson

__all__ = ["Context", "RUNNERS", "SUITE_SETTINGS", "num", "acc_num"]


@dataclass
class Context:
    model: nn.Module
    x: torch.Tensor  #: test images (N, C, H, W), uint8 or float in [0, 1], CPU
    y: torch.Tensor
    cfg: Any  #: ReportSettings
    device: torch.device
    info: Any = None  #: recipes DatasetInfo for named datasets
    test: Any = None
    data_name: str = "custom"
    denoiser: nn.Module | None = None
    corruption_root: Any = None
    cache_dir: Any = None
    ood_folders: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    _bench: Any = None

    def images(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.y.numel() if n is None else min(int(n), self.y.numel())
        x = self.x[:k]
        return (x.float().div(255.0) if x.dtype == torch.uint8 else x.float()), self.y[:k]

    def generator(self, salt: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(self.cfg.seed) * 1_000_003 + salt)

    def benchmark(self) -> tuple[Any, str]:
        """The corruption benchmark (built once per report; cached on disk for named in-memory datasets)."""
        if self._bench is None:
            self._bench = _benchmark(self)
        return self._bench


def num(value: float, lo: float, hi: float, n: int | None, interval: str) -> dict[str, Any]:
    return {"value": float(value), "ci95": [float(lo), float(hi)], "n": None if n is None else int(n),
            "interval": interval}


def acc_num(correct: int, total: int) -> dict[str, Any]:
    lo, hi = wilson(correct, total)
    return num(correct / total if total else float("nan"), lo, hi, total, "wilson")


def _logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = model(x)
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != x.shape[0] or z.shape[1] < 2:
        raise ValueError(f"the model must return (batch, num_classes >= 2) logits, got "
                         f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__} for a batch of "
                         f"{x.shape[0]} images")
    return z


@torch.no_grad()
def _logits(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    outs = []
    for s in range(0, x.shape[0], ctx.cfg.batch_size):
        outs.append(_logits_of(ctx.model, x[s:s + ctx.cfg.batch_size].to(ctx.device)).float().cpu())
    return torch.cat(outs)


# ------------------------------------------------------------------------------------------------------------


def run_clean(ctx: Context) -> dict[str, Any]:
    x, y = ctx.images(ctx.cfg.clean_images)
    pred = _logits(ctx, x).argmax(1)
    return {"accuracy": acc_num(int((pred == y).sum()), y.numel())}


def _benchmark(ctx: Context) -> tuple[Any, str]:
    cfg = ctx.cfg
    if ctx.corruption_root is not None:
        from .datasets import open_corruption_benchmark

        return open_corruption_benchmark(ctx.corruption_root), f"published corruption files from {ctx.corruption_root}"
    from .corruptions import DEFAULT_CORRUPTIONS, make_corrupted_dataset

    names = list(cfg.corruptions or DEFAULT_CORRUPTIONS)
    if ctx.info is not None and ctx.test is not None and cfg.severities == [1, 2, 3, 4, 5]:
        from robaug.data.datasets import TensorImages
        from robaug.recipes.evaluate import corruption_benchmark

        if isinstance(ctx.test, TensorImages):
            return corruption_benchmark(ctx.info, ctx.test, num_images=cfg.corruption_images, seed=cfg.corruption_seed,
                                        corruptions=names, cache_dir=ctx.cache_dir, progress=ctx.progress)
    x, y = ctx.images(cfg.corruption_images)
    bench = make_corrupted_dataset(x, y, names, cfg.severities, seed=cfg.corruption_seed, progress=ctx.progress)
    return bench, (f"{ctx.data_name}-C re-implemented by robaug.eval.corruptions ({len(names)} corruptions, first "
                   f"{y.numel()} test images, seed {cfg.corruption_seed}; not the published -C files)")


def _corruption_sets(ctx: Context):
    bench, note = ctx.benchmark()
    sevs = [s for s in ctx.cfg.severities if s in bench.severities]
    names = [c for c in (ctx.cfg.corruptions or bench.corruptions) if c in bench.corruptions]
    return bench, note, names, sevs


def run_corruptions(ctx: Context) -> dict[str, Any]:
    from .evaluation import evaluate_corruptions

    bench, note, names, sevs = _corruption_sets(ctx)
    res = evaluate_corruptions(ctx.model, bench, corruptions=names, severities=sevs, batch_size=ctx.cfg.batch_size,
                               device=ctx.device, progress=ctx.progress)
    per: dict[str, dict[str, Any]] = {}
    wrong_all = total_all = 0
    for c in names:
        per[c] = {}
        for s in sevs:
            n = res.num_samples[c][s]
            wrong = round(res.errors[c][s] * n)
            per[c][str(s)] = acc_num(n - wrong, n)
            wrong_all += wrong
            total_all += n
    per_sev = {}
    for s in sevs:
        n = sum(res.num_samples[c][s] for c in names)
        w = sum(round(res.errors[c][s] * res.num_samples[c][s]) for c in names)
        per_sev[str(s)] = acc_num(n - w, n)
    mean = acc_num(total_all - wrong_all, total_all)
    mean["interval"] = "wilson (pooled over all sets)"
    return {"benchmark": note, "mean_accuracy": mean, "per_severity": per_sev, "per_set": per,
            "per_corruption": {c: 1.0 - e for c, e in res.corruption_errors.items()}}


def run_adversarial(ctx: Context) -> dict[str, Any]:
    from .adversarial import autoattack_accuracy, pgd_accuracy

    cfg = ctx.cfg
    x, y = ctx.images(cfg.adv_images)
    res = pgd_accuracy(ctx.model, x, y, eps=float(cfg.pgd_eps), steps=cfg.pgd_steps, norm=cfg.pgd_norm,
                       batch_size=cfg.batch_size, generator=ctx.generator(1), device=ctx.device)
    out: dict[str, Any] = {
        "attack": f"PGD-{cfg.pgd_steps} {cfg.pgd_norm} eps={cfg.pgd_eps:.6g} (CE, random start)",
        "clean_accuracy": acc_num(int(res.clean_correct.sum()), y.numel()),
        "pgd_accuracy": acc_num(int(res.correct.sum()), y.numel()),
    }
    if cfg.autoattack:
        aa = autoattack_accuracy(ctx.model, x, y, float(cfg.pgd_eps), cfg.pgd_norm, batch_size=cfg.batch_size,
                                 seed=cfg.seed, device=ctx.device)
        out["autoattack_accuracy"] = acc_num(int(aa.correct.sum()), y.numel())
    return out


def run_certified(ctx: Context) -> dict[str, Any]:
    from .certify import certify

    cfg = ctx.cfg
    x, y = ctx.images(cfg.cert_images)
    out: dict[str, Any] = {"denoised": ctx.denoiser is not None, "per_sigma": {}}
    for i, sigma in enumerate(cfg.cert_sigmas):
        res = certify(ctx.model, x, y, sigma=float(sigma), denoiser=ctx.denoiser, n0=cfg.cert_n0, n=cfg.cert_n,
                      alpha=cfg.cert_alpha, batch_size=cfg.cert_batch_size, generator=ctx.generator(100 + i),
                      device=ctx.device, progress=ctx.progress)
        top = float(res.radii.max()) if len(res) else 0.0
        grid = sorted(set(np.linspace(0.0, max(top, max(cfg.cert_radii)), 41).round(6).tolist()))
        curve_r, curve_a = res.curve(grid)
        n = y.numel()
        hit = res.predictions == y
        out["per_sigma"][str(sigma)] = {
            "certified_accuracy": {str(r): acc_num(int(res.correct(r).sum()), n) for r in cfg.cert_radii},
            "abstain_rate": acc_num(int((res.predictions == -1).sum()), n),
            "mean_radius_correct": float(res.radii[hit].mean()) if bool(hit.any()) else 0.0,
            "curve": {"radii": curve_r.tolist(), "accuracy": curve_a.tolist()},
        }
    out["note"] = ("certified accuracy: correct and certified at radius >= r (l2, [0, 1] pixel units), with "
                   f"probability >= 1 - alpha = {1 - cfg.cert_alpha} per image; the Wilson interval covers the "
                   "sampling of test images only")
    return out


def _hist(scores: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    d, _ = np.histogram(np.clip(scores, edges[0], edges[-1]), bins=edges, density=True)
    return {"edges": edges.tolist(), "density": np.nan_to_num(d).tolist()}


def _ood_sets(ctx: Context) -> dict[str, Any]:
    from .ood_sets import OFFLINE_OOD_SETS, load_ood_folder, offline_ood_sets

    c, h, w = ctx.x.shape[1:]
    cfg = ctx.cfg
    names = cfg.ood_sets
    if names is None:
        names = list(OFFLINE_OOD_SETS) if (h == w) else ["uniform", "gaussian", "blobs"]
    sets = offline_ood_sets(h, c, n=cfg.ood_images, names=names, seed=cfg.seed) if h == w else {}
    for name, path in ctx.ood_folders.items():
        kind = "near" if str(name).endswith(":near") else "far"
        clean = str(name).split(":")[0]
        sets[clean] = load_ood_folder(path, size=(h, w), channels=c, limit=cfg.ood_images, kind=kind, name=clean)
    return sets


def run_ood(ctx: Context) -> dict[str, Any]:
    from .ood import ood_metrics, ood_scores

    cfg = ctx.cfg
    x_in, _ = ctx.images(cfg.ood_images)
    sets = _ood_sets(ctx)
    out: dict[str, Any] = {"in_distribution": f"{ctx.data_name} test (first {x_in.shape[0]})",
                           "sets": {k: {"kind": v.kind, "source": v.source, "images": len(v)} for k, v in sets.items()},
                           "methods": {}}
    from .ood import auroc, average_precision, fpr_at_tpr

    stats: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "auroc": auroc, "aupr_in": average_precision, "aupr_out": lambda a, b: average_precision(-b, -a),
        "fpr95": lambda a, b: fpr_at_tpr(a, b, 0.95)}
    for method in cfg.ood_methods:
        s_in = ood_scores(ctx.model, x_in, method, batch_size=cfg.batch_size, device=ctx.device).numpy()
        per: dict[str, Any] = {}
        all_scores = [s_in]
        scores_out = {}
        for k, v in sets.items():
            s_out = ood_scores(ctx.model, v.images, method, batch_size=cfg.batch_size, device=ctx.device).numpy()
            scores_out[k] = s_out
            m = ood_metrics(s_in, s_out)
            row = {}
            for key, val in m.items():
                lo, hi = bootstrap_ci(stats[key], [s_in, s_out], n_boot=cfg.n_boot, seed=cfg.seed)
                row[key] = num(val, lo, hi, len(s_out), "bootstrap")
            row["kind"] = v.kind
            per[k] = row
            all_scores.append(s_out)
        lo_e, hi_e = np.percentile(np.concatenate(all_scores), [0.5, 99.5])
        edges = np.linspace(lo_e, hi_e if hi_e > lo_e else lo_e + 1e-6, 41)
        hists = {"in-distribution": _hist(s_in, edges), **{k: _hist(v, edges) for k, v in scores_out.items()}}
        out["methods"][method] = {"per_set": per, "histograms": hists}
        for kind in ("near", "far"):
            vals = [r["auroc"]["value"] for r in per.values() if r["kind"] == kind]
            if vals:
                out["methods"][method][f"mean_auroc_{kind}"] = float(np.mean(vals))
    return out


def _ece(conf_correct: np.ndarray, n_bins: int) -> float:
    """ECE of ``(N, 2)`` rows ``(confidence, correct)``."""
    from .calibration import _bins

    b = _bins(conf_correct[:, 0], conf_correct[:, 1], n_bins)
    f = b["count"] > 0
    return float(np.sum(b["count"][f] / len(conf_correct) * np.abs(b["accuracy"][f] - b["confidence"][f])))


def _calib(probs: np.ndarray, labels: np.ndarray, ctx: Context) -> dict[str, Any]:
    from .calibration import calibration_metrics, reliability_bins

    m = calibration_metrics(probs, labels, ctx.cfg.calib_bins)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    cp = np.stack([conf, correct], 1)
    out: dict[str, Any] = {}
    nb = ctx.cfg.calib_bins
    from .calibration import rms_calibration_error

    fns: dict[str, Callable[[np.ndarray], float]] = {
        "ece": lambda a: _ece(a, nb),
        "rms": lambda a: rms_calibration_error(a[:, 0], a[:, 1], 100, True),
        "rms_all_bins": lambda a: rms_calibration_error(a[:, 0], a[:, 1], 100, False),
    }
    for key in ("ece", "rms", "rms_all_bins"):
        lo, hi = bootstrap_ci(fns[key], [cp], n_boot=ctx.cfg.n_boot, seed=ctx.cfg.seed)
        out[key] = num(m[key], lo, hi, len(labels), "bootstrap")
    p_true = np.maximum(probs[np.arange(len(labels)), labels], 1e-12)
    nll_i = -np.log(p_true)
    onehot = np.eye(probs.shape[1])[labels]
    brier_i = ((probs - onehot) ** 2).sum(1)
    for key, per_sample in (("nll", nll_i), ("brier", brier_i)):
        lo, hi = bootstrap_ci(np.mean, [per_sample], n_boot=ctx.cfg.n_boot, seed=ctx.cfg.seed)
        out[key] = num(m[key], lo, hi, len(labels), "bootstrap")
    out["accuracy"] = acc_num(int(correct.sum()), len(labels))
    out["confidence"] = m["confidence"]
    b = reliability_bins(probs, labels, nb)
    out["reliability"] = {k: np.nan_to_num(v).tolist() for k, v in b.items()}
    return out


def run_calibration(ctx: Context) -> dict[str, Any]:
    from .calibration import rms_calibration_error

    x, y = ctx.images(ctx.cfg.clean_images)
    probs = F.softmax(_logits(ctx, x).double(), 1).numpy()
    out: dict[str, Any] = {"clean": _calib(probs, y.numpy(), ctx)}
    bench, note, names, sevs = _corruption_sets(ctx)
    ps, ys, per_c = [], [], []
    for c in names:
        n0 = len(ps)
        for s in sevs:
            for xb, yb in bench.batches(c, s, batch_size=ctx.cfg.batch_size):
                ps.append(F.softmax(_logits(ctx, xb).double(), 1).numpy())
                ys.append(yb.numpy())
        pc, yc = np.concatenate(ps[n0:]), np.concatenate(ys[n0:])
        per_c.append(np.stack([pc.max(1), (pc.argmax(1) == yc).astype(np.float64)], 1))
    if ps:
        out["corrupted"] = _calib(np.concatenate(ps), np.concatenate(ys), ctx)
        out["corrupted"]["pooled_over"] = f"{len(names)} corruptions x {len(sevs)} severities ({note})"
        # the other convention: the metric per corruption (its severities pooled), averaged over corruptions
        nb = ctx.cfg.calib_bins
        fns = {"ece": lambda a: _ece(a, nb), "rms": lambda a: rms_calibration_error(a[:, 0], a[:, 1], 100, True)}
        mean_c: dict[str, Any] = {}
        for key, fn in fns.items():
            stat = lambda *groups, fn=fn: float(np.mean([fn(g) for g in groups]))  # noqa: E731
            lo, hi = bootstrap_ci(stat, per_c, n_boot=ctx.cfg.n_boot, seed=ctx.cfg.seed)
            mean_c[key] = num(stat(*per_c), lo, hi, sum(len(g) for g in per_c), "bootstrap")
        mean_c["per_corruption"] = {c: {k: fn(g) for k, fn in fns.items()} for c, g in zip(names, per_c)}
        out["corrupted_mean_over_corruptions"] = mean_c
    return out


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "clean": run_clean, "corruptions": run_corruptions, "adversarial": run_adversarial,
    "certified": run_certified, "ood": run_ood, "calibration": run_calibration,
}

#: the settings each suite depends on (its stored result is reused while they, the model, the data and the
#: denoiser stay the same)
SUITE_SETTINGS: dict[str, tuple[str, ...]] = {
    "clean": ("clean_images", "batch_size"),
    "corruptions": ("corruption_images", "corruptions", "severities", "corruption_seed"),
    "adversarial": ("adv_images", "pgd_eps", "pgd_steps", "pgd_norm", "autoattack", "seed"),
    "certified": ("cert_images", "cert_sigmas", "cert_n0", "cert_n", "cert_alpha", "cert_radii", "seed",
                  "cert_batch_size"),
    "ood": ("ood_images", "ood_methods", "ood_sets", "n_boot", "seed"),
    "calibration": ("clean_images", "corruption_images", "corruptions", "severities", "corruption_seed",
                    "calib_bins", "n_boot", "seed"),
}
