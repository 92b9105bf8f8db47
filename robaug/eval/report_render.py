"""``report.md`` and the figures of a :func:`robaug.eval.report` document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render_markdown", "render_figures"]


def _pct(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    lo, hi = d["ci95"]
    return f"{100 * d['value']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def _val(d: dict[str, Any] | None, digits: int = 4) -> str:
    if not d:
        return ""
    lo, hi = d["ci95"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render_markdown(doc: dict[str, Any]) -> str:
    s = doc["suites"]
    L = [f"# Robustness report: {doc['name']}", "",
         f"Dataset `{doc['dataset']}`, model sha256 `{doc['model_sha256'][:16]}`, device {doc['device']}, "
         f"{'quick' if doc['quick'] else 'full'} settings, robaug {doc['robaug_version']}, "
         f"torch {doc['torch_version']}. "
         f"Values in % unless noted, with 95% intervals in brackets ({doc['intervals']}). "
         f"Exact settings: `report.json`.", ""]
    if doc.get("reused_suites"):
        L += [f"Reused from an earlier run (same settings, model and data): {', '.join(doc['reused_suites'])}.", ""]
    L += ["| suite | metric | value [95% CI] | n |", "|---|---|---|---|"]

    def row(suite: str, metric: str, d: dict[str, Any] | None, pct: bool = True) -> None:
        if d:
            L.append(f"| {suite} | {metric} | {_pct(d) if pct else _val(d)} | {d.get('n') or ''} |")

    if "clean" in s:
        row("clean", "accuracy", s["clean"]["accuracy"])
    if "corruptions" in s:
        c = s["corruptions"]
        row("corruptions", "mean accuracy", c["mean_accuracy"])
        for sev, d in c["per_severity"].items():
            row("corruptions", f"severity {sev}", d)
    if "adversarial" in s:
        a = s["adversarial"]
        row("adversarial", "clean accuracy", a["clean_accuracy"])
        row("adversarial", a["attack"], a["pgd_accuracy"])
        row("adversarial", "AutoAttack", a.get("autoattack_accuracy"))
    if "certified" in s:
        cert = s["certified"]
        kind = "denoised smoothing" if cert["denoised"] else "randomized smoothing"
        for sigma, d in cert["per_sigma"].items():
            for r, v in d["certified_accuracy"].items():
                row("certified", f"{kind}, sigma {sigma}, radius {r}", v)
            row("certified", f"{kind}, sigma {sigma}, abstain rate", d["abstain_rate"])
    if "ood" in s:
        for method, m in s["ood"]["methods"].items():
            for name, r in m["per_set"].items():
                row("ood", f"{method} AUROC vs {name} ({r['kind']})", r["auroc"])
                row("ood", f"{method} FPR95 vs {name} ({r['kind']})", r["fpr95"])
    if "calibration" in s:
        for part in ("clean", "corrupted"):
            if part in s["calibration"]:
                c = s["calibration"][part]
                for key in ("ece", "rms"):
                    row("calibration", f"{part} {key.upper()}", c[key])
                row("calibration", f"{part} NLL (nats)", c["nll"], pct=False)
                row("calibration", f"{part} Brier", c["brier"], pct=False)
        mc = s["calibration"].get("corrupted_mean_over_corruptions")
        if mc:
            row("calibration", "corrupted ECE, mean over corruptions", mc["ece"])
            row("calibration", "corrupted RMS, mean over corruptions", mc["rms"])
    L.append("")
    if "corruptions" in s:
        c = s["corruptions"]
        sevs = list(c["per_severity"])
        L += ["## Accuracy per corruption and severity (%)", "", c["benchmark"], "",
              "| corruption | " + " | ".join(f"s{v}" for v in sevs) + " | mean |",
              "|---|" + "---|" * (len(sevs) + 1)]
        for name, per in c["per_set"].items():
            L.append(f"| {name} | " + " | ".join(f"{100 * per[v]['value']:.1f}" for v in sevs)
                     + f" | {100 * c['per_corruption'][name]:.1f} |")
        L.append("")
    if "ood" in s:
        o = s["ood"]
        L += ["## OOD sets", "", f"In-distribution: {o['in_distribution']}. Near-OOD: same image style, other "
              "classes; far-OOD: another domain (see robaug.eval.ood_sets).", ""]
        for k, v in o["sets"].items():
            L.append(f"- `{k}` ({v['kind']}, {v['images']} images): {v['source']}")
        L.append("")
    if "certified" in s:
        L += ["## Certification", "", s["certified"]["note"] + ". Floating-point caveat: the certificate holds for "
              "the exact smoothed classifier; float evaluation and pseudo-random noise can break it in corner cases "
              "(Voracek & Hein 2023).", ""]
    figs = doc.get("figures") or {}
    if figs:
        L += ["## Figures", ""] + [f"![{k}]({v})" for k, v in figs.items()] + [""]
    if doc.get("figure_note"):
        L += [doc["figure_note"], ""]
    return "\n".join(L)


def render_figures(doc: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write the PNGs that the suites in ``doc`` allow; returns ``{name: path relative to the report}``."""
    from .report_figures import certified_curve_figure, corruption_figure, have_matplotlib, ood_histogram_figure

    s = doc["suites"]
    out: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    rel = lambda p: f"figures/{Path(p).name}"  # noqa: E731
    if "calibration" in s:
        from .calibration import reliability_diagram

        for part in ("clean", "corrupted"):
            if part in s["calibration"]:
                p = reliability_diagram(None, None, folder / f"reliability_{part}.png",
                                        bins=s["calibration"][part]["reliability"], title=part)
                out[f"reliability diagram ({part})"] = rel(p)
    if not have_matplotlib():
        doc["figure_note"] = "Other figures need matplotlib: pip install matplotlib (or robaug[recipes])."
        return out
    if "certified" in s:
        curves = {f"sigma={k}": (v["curve"]["radii"], v["curve"]["accuracy"])
                  for k, v in s["certified"]["per_sigma"].items()}
        out["certified accuracy vs radius"] = rel(certified_curve_figure(folder / "certified.png", curves))
    if "corruptions" in s:
        per = {c: {k: v["value"] for k, v in d.items()} for c, d in s["corruptions"]["per_set"].items()}
        clean = s.get("clean", {}).get("accuracy", {}).get("value")
        out["accuracy per corruption and severity"] = rel(corruption_figure(folder / "corruptions.png", per, clean))
    if "ood" in s:
        for method, m in s["ood"]["methods"].items():
            out[f"OOD scores ({method})"] = rel(ood_histogram_figure(folder / f"ood_{method}.png", m["histograms"],
                                                                     method))
    return out
