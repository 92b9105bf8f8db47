"""OpenCV operations used by the reference corruption code, re-implemented as batched torch operations.

Each function works on ``(B, 1, H, W)`` float tensors that hold the integer values OpenCV would hold in its
uint8 / int16 buffers, so that the results equal OpenCV's on the same input (checked in the tests against
direct computations of OpenCV's documented algorithms):

- :func:`canny`: ``cv2.Canny(img, low, high)`` (3x3 Sobel with replicated border, L1 gradient magnitude,
  OpenCV's non-maximum suppression with its tie-breaking and 8-connected hysteresis);
- :func:`chamfer_distance`: ``cv2.distanceTransform(mask, cv2.DIST_L2, 5)`` (the 5x5 chamfer metric
  1 / 1.4 / 2.1969 in OpenCV's 16-bit fixed point, OpenCV's two raster passes), truncated;
- :func:`equalize_hist`: ``cv2.equalizeHist``;
- :func:`linear_resize_matrix`: the weights of ``cv2.resize(img, (0, 0), fx=f, fy=f)`` (``INTER_LINEAR``)
  along one axis.

kornia has counterparts, but they compute other things, so these stay:
``kornia.filters.canny`` (an L2 gradient magnitude after a Gaussian blur), ``kornia.contrib.distance_transform``
(a soft-minimum approximation of the Euclidean distance), ``kornia.enhance.equalize`` (PIL's lookup table, not
OpenCV's: up to 59 grey levels apart), ``kornia.filters.box_blur`` (float32 sums of ninths fall just below whole
numbers, and the ``floor`` that follows in spatter then loses a grey level; :func:`box_blur3` sums in float64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["canny", "chamfer_distance", "equalize_hist", "linear_resize_matrix", "box_blur3"]

# OpenCV's Canny: tan(22.5 deg) in Q15
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
# cv2.distanceTransform(DIST_L2, 5): metrics 1, 1.4, 2.1969 in Q16 fixed point
_CHAMFER = (round(1.0 * 65536) / 65536, round(1.4 * 65536) / 65536, round(2.1969 * 65536) / 65536)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., i, j] = x[..., i + dy, j + dx]``, ``fill`` outside the image."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    xp = F.pad(x, (p, p, p, p), value=fill)
    return xp[..., p + dy: p + dy + h, p + dx: p + dx + w]


def _replicate3(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="replicate")


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Edges of ``cv2.Canny(img, low, high)`` (aperture 3, ``L2gradient=False``) as a bool ``(B, 1, H, W)``.

    ``img`` holds uint8 values (0..255) as floats. A pixel is a candidate when its L1 Sobel magnitude ``m`` is
    above ``floor(low)`` and it is a local maximum along the gradient direction quantised to 0/45/90/135 degrees
    (strictly greater than the left / upper neighbour and not smaller than the right / lower one; strictly
    greater than both diagonal neighbours); candidates above ``floor(high)`` are edges, and so is every candidate
    8-connected to an edge through candidates.
    """
    lo, hi = math.floor(low), math.floor(high)
    p = _replicate3(img.double())
    # Sobel (correlation): gx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], gy its transpose
    r0, r1, r2 = p[..., :-2, :], p[..., 1:-1, :], p[..., 2:, :]  # rows above, at, below
    c0, c1, c2 = p[..., :, :-2], p[..., :, 1:-1], p[..., :, 2:]  # columns left, at, right
    gx = (r0[..., 2:] - r0[..., :-2]) + 2 * (r1[..., 2:] - r1[..., :-2]) + (r2[..., 2:] - r2[..., :-2])
    gy = (c0[..., 2:, :] - c0[..., :-2, :]) + 2 * (c1[..., 2:, :] - c1[..., :-2, :])
    gy = gy + (c2[..., 2:, :] - c2[..., :-2, :])
    gx, gy = gx.long(), gy.long()
    m = gx.abs() + gy.abs()
    ax = gx.abs()
    ay = gy.abs() << 15
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    s = torch.where((gx ^ gy) < 0, -1, 1)  # diagonal direction
    left, right = _shift(m, 0, -1, 0), _shift(m, 0, 1, 0)
    up, down = _shift(m, -1, 0, 0), _shift(m, 1, 0, 0)
    # diagonal neighbours: previous row at x - s, next row at x + s
    up_l, up_r = _shift(m, -1, -1, 0), _shift(m, -1, 1, 0)
    dn_l, dn_r = _shift(m, 1, -1, 0), _shift(m, 1, 1, 0)
    prev_diag = torch.where(s > 0, up_l, up_r)
    next_diag = torch.where(s > 0, dn_r, dn_l)
    peak = torch.where(
        horizontal, (m > left) & (m >= right),
        torch.where(vertical, (m > up) & (m >= down), (m > prev_diag) & (m > next_diag)),
    )
    candidate = peak & (m > lo)
    strong = candidate & (m > hi)
    # hysteresis: grow the strong set through 8-connected candidates until it stops changing
    weak = candidate.float()
    edges = strong.float()
    n = edges.shape[-2] * edges.shape[-1]
    for it in range(n):
        grown = F.max_pool2d(edges, 3, stride=1, padding=1) * weak
        grown = torch.maximum(grown, edges)
        if it % 4 == 3 and torch.equal(grown, edges):
            break
        edges = grown
    return edges > 0


def chamfer_distance(sources: torch.Tensor, limit: float) -> torch.Tensor:
    """``min(cv2.distanceTransform(~sources, cv2.DIST_L2, 5), limit)`` on a bool ``(B, 1, H, W)`` mask.

    OpenCV's two raster passes with the 5x5 chamfer mask (steps 1 axial, 1.4 diagonal, 2.1969 knight's move,
    in its 16-bit fixed point; outside the image is not a source): a forward pass taking each pixel's minimum
    over the already visited neighbours above and to the left, then a backward pass over those below and to
    the right. Rows are visited in order; the left-to-right dependency inside a row is a running minimum
    (``d[j] = j + cummin(t[k] - k)`` for unit axial steps), so each row is one vectorised step for the whole
    batch. Without any source the result is ``limit`` everywhere.
    """
    a, b, c = _CHAMFER
    if a != 1.0:  # pragma: no cover - the running-minimum trick below assumes unit axial steps
        raise AssertionError("axial chamfer step must be 1")
    bsz, ch, h, w = sources.shape
    inf = 1e9
    src = sources.reshape(bsz * ch, h, w)
    n = src.shape[0]
    # two columns of padding on each side (outside the image: never a source, distance "infinite")
    d = torch.full((n, h + 4, w + 4), inf, dtype=torch.float64, device=sources.device)
    j = torch.arange(w, dtype=torch.float64, device=sources.device)
    zero = torch.zeros((), dtype=torch.float64, device=sources.device)
    C = slice(2, w + 2)

    def row_min(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
        # neighbours in the row one step away (r1) and two steps away (r2), in the pass direction
        t = torch.minimum(r1[:, 2: w + 2] + a, torch.minimum(r1[:, 1: w + 1], r1[:, 3: w + 3]) + b)
        t = torch.minimum(t, torch.minimum(r1[:, 0:w], r1[:, 4: w + 4]) + c)
        return torch.minimum(t, torch.minimum(r2[:, 1: w + 1], r2[:, 3: w + 3]) + c)

    for i in range(h):  # forward: rows above, then left to right
        t = torch.where(src[:, i], zero, row_min(d[:, i + 1], d[:, i]))
        d[:, i + 2, C] = torch.cummin(t - j, dim=1).values + j
    for i in range(h - 1, -1, -1):  # backward: rows below, then right to left
        t = torch.minimum(d[:, i + 2, C], row_min(d[:, i + 3], d[:, i + 4]))
        d[:, i + 2, C] = torch.cummin((t + j).flip(1), dim=1).values.flip(1) - j
    out = d[:, 2: h + 2, C].clamp(max=float(limit))
    return out.reshape(bsz, ch, h, w).float()


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` (mean over 3x3, reflect-101 border), in float."""
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"  # torch's "reflect" is reflect-101
    return F.avg_pool2d(F.pad(x.double(), (1, 1, 1, 1), mode=mode), 3, stride=1).float()


def equalize_hist(x: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image of a ``(B, 1, H, W)`` batch of uint8 values (as floats).

    With ``i0`` the smallest value of an image and ``cdf`` its cumulative histogram, value ``v`` becomes
    ``round((cdf(v) - cdf(i0)) * 255 / (N - cdf(i0)))`` (float32 product, as OpenCV); a constant image is
    returned unchanged.
    """
    b = x.shape[0]
    v = x.reshape(b, -1).long().clamp(0, 255)
    n = v.shape[1]
    hist = torch.zeros(b, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    cdf = hist.cumsum(1)
    i0 = v.min(1, keepdim=True).values
    h0 = cdf.gather(1, i0)
    scale = torch.tensor(255.0, dtype=torch.float32, device=x.device) / (n - h0).clamp_min(1).float()
    lut = ((cdf - h0).float() * scale).round().clamp(0, 255)
    out = lut.gather(1, v)
    constant = h0 == n
    out = torch.where(constant, v.float(), out)
    return out.view_as(x).to(x.dtype)


def linear_resize_matrix(n_in: int, factor: float, device: torch.device | None = None) -> torch.Tensor:
    """``(n_out, n_in)`` weights of ``cv2.resize(..., fx=factor)`` with ``INTER_LINEAR`` along one axis.

    ``n_out = round(n_in * factor)``; output pixel ``d`` samples the input at ``(d + 0.5) / factor - 0.5``
    (half-pixel centres, no anti-aliasing), clamped to the edge pixels. OpenCV rounds the weights of uint8
    images to 11 bits, which can move a result by one grey level; at ``factor = 0.2`` (CIFAR-10-C's frost)
    every sample falls on a pixel centre and the weights are exact.
    """
    n_out = max(1, int(round(n_in * factor)))
    scale = 1.0 / factor
    d = torch.arange(n_out, dtype=torch.float64)
    src = ((d + 0.5) * scale - 0.5).float().double()  # OpenCV computes the coordinate in float32
    lo = torch.floor(src)
    frac = src - lo
    lo = lo.long()
    frac = torch.where(lo < 0, torch.zeros_like(frac), frac)
    lo = lo.clamp_min(0)
    at_end = lo >= n_in - 1
    frac = torch.where(at_end, torch.zeros_like(frac), frac)
    lo = lo.clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.float().to(device) if device is not None else m.float()
