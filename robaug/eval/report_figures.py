"""The figures of :func:`robaug.eval.report`: certified accuracy vs radius, reliability diagram, accuracy per
corruption and severity, OOD score histograms. matplotlib (the ``recipes`` extra) draws them; without it the
reliability diagram falls back to PIL and the others are skipped (the report says so)."""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["have_matplotlib", "save_png", "certified_curve_figure", "corruption_figure", "ood_histogram_figure"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _write(path: str | os.PathLike, data: bytes) -> str:
    from robaug._core.io import atomic_write_bytes

    atomic_write_bytes(path, data)
    return os.fspath(path)


def save_png(path: str | os.PathLike, draw_mpl: Callable[[Any], Any],
             draw_pil: Callable[[Any, Any, tuple[int, int, int, int]], None] | None = None) -> str:
    """Render with matplotlib (Agg, no display) when installed, else with ``draw_pil(img, draw, plot_box)`` on a
    white 480x480 PIL canvas; written atomically. Raises ImportError when neither is possible."""
    buf = io.BytesIO()
    if have_matplotlib():
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig = draw_mpl(plt)
        fig.tight_layout()
        fig.savefig(buf, format="png")
        plt.close(fig)
    elif draw_pil is not None:
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (480, 480), "white")
        draw_pil(img, ImageDraw.Draw(img), (40, 30, 460, 450))
        img.save(buf, format="PNG")
    else:
        raise ImportError("this figure needs matplotlib: pip install matplotlib (or robaug[recipes])")
    return _write(path, buf.getvalue())


def certified_curve_figure(path: str | os.PathLike, curves: Mapping[str, tuple[list[float], list[float]]]) -> str:
    """Certified accuracy against l2 radius, one line per ``label -> (radii, accuracies)``."""

    def draw(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        for label, (r, a) in curves.items():
            ax.step(r, a, where="post", label=label)
        ax.set(xlabel="l2 radius (pixel units in [0, 1])", ylabel="certified accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend()
        return fig

    return save_png(path, draw)


def corruption_figure(path: str | os.PathLike, per_set: Mapping[str, Mapping[str, float]],
                      clean: float | None = None) -> str:
    """Accuracy per corruption (rows) and severity (columns) as a heat map, with the clean accuracy in the title."""
    names = list(per_set)
    sevs = sorted({s for v in per_set.values() for s in v}, key=int)
    grid = np.array([[per_set[c].get(s, np.nan) for s in sevs] for c in names], dtype=np.float64)

    def draw(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(sevs), 0.8 + 0.32 * len(names)), dpi=120)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(sevs)), [f"s{s}" for s in sevs])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(sevs)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="w" if grid[i, j] < 0.6 else "k")
        fig.colorbar(im, ax=ax, label="accuracy")
        ax.set_title("accuracy per corruption and severity" + (f" (clean {100 * clean:.1f}%)" if clean else ""),
                     fontsize=8)
        return fig

    return save_png(path, draw)


def ood_histogram_figure(path: str | os.PathLike, hists: Mapping[str, Mapping[str, Any]], method: str) -> str:
    """Score histograms (density) of the in-distribution set and every OOD set, for one score ``method``;
    ``hists[name] = {"edges": [...], "density": [...]}``."""

    def draw(plt: Any) -> Any:
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        for name, h in hists.items():
            e = np.asarray(h["edges"])
            ax.stairs(np.asarray(h["density"]), e, label=name, fill=name == "in-distribution",
                      alpha=0.35 if name == "in-distribution" else 1.0)
        ax.set(xlabel=f"{method} score (higher = more in-distribution)", ylabel="density")
        ax.legend(fontsize=7)
        return fig

    return save_png(path, draw)
