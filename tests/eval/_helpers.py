"""Shared by the tests of robaug.eval: smooth test images, luma, and naive loop versions of OpenCV's Canny and
5x5 chamfer distance."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _images(c: int, size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth structured images (a blurred random field plus a bright square) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x[..., size // 4: size // 2, size // 4: size // 2] = 0.9
    return x.clamp(0, 1)


def _luma(y: torch.Tensor) -> torch.Tensor:
    return (y * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _naive_canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's documented Canny (3x3 Sobel, replicated border, L1 magnitude, NMS in 4 directions with
    OpenCV's strict / non-strict comparisons, 8-connected hysteresis) with loops and exact tangents."""
    h, w = img.shape
    p = np.pad(img.astype(np.int64), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.abs(gx) + np.abs(gy)
    m = np.pad(mag, 1)  # zero magnitude outside

    def mm(i, j):
        return m[i + 1, j + 1]

    cand = np.zeros((h, w), bool)
    strong = np.zeros((h, w), bool)
    t22, t67 = math.tan(math.radians(22.5)), math.tan(math.radians(67.5))
    for i in range(h):
        for j in range(w):
            v = mag[i, j]
            if v <= math.floor(low):
                continue
            ax, ay = abs(gx[i, j]), abs(gy[i, j])
            if ay < t22 * ax:
                keep = v > mm(i, j - 1) and v >= mm(i, j + 1)
            elif ay > t67 * ax:
                keep = v > mm(i - 1, j) and v >= mm(i + 1, j)
            else:
                s = -1 if gx[i, j] * gy[i, j] < 0 else 1
                keep = v > mm(i - 1, j - s) and v > mm(i + 1, j + s)
            cand[i, j] = keep
            strong[i, j] = keep and v > math.floor(high)
    edges = strong.copy()
    stack = list(zip(*np.nonzero(strong)))
    while stack:
        i, j = stack.pop()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and cand[a, b] and not edges[a, b]:
                    edges[a, b] = True
                    stack.append((a, b))
    return edges


def _naive_chamfer(sources: np.ndarray) -> np.ndarray:
    """Dijkstra over the 5x5 chamfer graph (steps 1, 1.4, 2.1969 in OpenCV's Q16), from all sources."""
    import heapq

    h, w = sources.shape
    a, b, c = 1.0, round(1.4 * 65536) / 65536, round(2.1969 * 65536) / 65536
    steps = [(0, 1, a), (1, 0, a), (0, -1, a), (-1, 0, a), (1, 1, b), (1, -1, b), (-1, 1, b), (-1, -1, b)]
    steps += [(dy, dx, c) for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))]
    d = np.full((h, w), np.inf)
    heap = [(0.0, i, j) for i, j in zip(*np.nonzero(sources))]
    for _, i, j in heap:
        d[i, j] = 0.0
    heapq.heapify(heap)
    while heap:
        dist, i, j = heapq.heappop(heap)
        if dist > d[i, j]:
            continue
        for dy, dx, cost in steps:
            y, x = i + dy, j + dx
            if 0 <= y < h and 0 <= x < w and dist + cost < d[y, x]:
                d[y, x] = dist + cost
                heapq.heappush(heap, (dist + cost, y, x))
    return d
