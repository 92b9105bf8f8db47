"""Procedural fractal images: random iterated function systems rendered with a batched chaos game.

IPMix's official mixing set is a download of ~13k fractal and feature-visualisation images; the paper's
Table 8 shows procedurally generated sets (FractalDB, RCDB, Dead Leaves) do about as well. robaug makes its
default mixing set on the fly with :func:`generate_fractals`, a batched *iterated function system* (IFS)
renderer in the spirit of FractalDB (Kataoka et al., 2020) and Anderson & Farrell (2022):

1. Each system has ``K`` (2..4) strictly contractive affine maps ``w_k(p) = A_k p + b_k`` with
   ``A_k = R(theta_k) diag(s1_k, s2_k) R(phi_k) D_k`` (rotations ``R``, a random reflection ``D_k``) and singular
   values rescaled so that ``sum_k (s1_k + 2 s2_k)`` falls in Anderson & Farrell's range
   ``[(5 + K) / 2, (6 + K) / 2]``; map ``k`` is chosen with probability proportional to ``|det A_k|``.
2. The chaos game ``p <- w_k(p)`` runs for all systems and all their points at once (one tensor op per
   iteration); after a burn-in every visited point is recorded together with a colour that follows the
   "colour chaos game" ``c <- (c + colour_k) / 2``.
3. The hit histogram of every system is rendered in one ``bincount``; brightness is ``log(1 + hits)``,
   colour the mean colour of the hits, and the fractal is composited over a dim diamond-square plasma
   background (``kornia.contrib.diamond_square``).
4. Systems whose rendering covers too little or too much of the canvas are discarded and replaced.

Everything is drawn from one seeded ``torch.Generator`` on the requested device, so the same ``seed``,
``size`` and device give the same images.
"""

from __future__ import annotations

import math

import torch

from .._core.rng import rand, random_bytes

__all__ = ["generate_fractals", "sample_ifs", "chaos_game"]


def sample_ifs(
    n: int,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    min_maps: int = 2,
    max_maps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contractive affine IFS: ``(coeffs (n, K, 6), probs (n, K))`` with ``K = max_maps``.

    ``coeffs[..., :]`` is ``(a, b, e, c, d, f)`` for ``p' = [[a, b], [c, d]] p + [e, f]``. Systems with fewer
    than ``max_maps`` maps have zero probability for the unused ones.
    """
    device = torch.device(device)
    k = max_maps
    u = rand((n, k, 9), generator, device)
    num_maps = min_maps + torch.floor(rand((n,), generator, device) * (max_maps - min_maps + 1)).long()
    used = torch.arange(k, device=device).unsqueeze(0) < num_maps.unsqueeze(1)  # (n, K)

    theta, phi = u[..., 0] * 2 * math.pi, u[..., 1] * 2 * math.pi
    s1 = 0.25 + 0.75 * u[..., 2]
    s2 = s1 * (0.1 + 0.9 * u[..., 3])
    flip = torch.where(u[..., 4] < 0.5, -1.0, 1.0)
    # Anderson & Farrell's "sigma factor": sum_k (s1 + 2 s2) in [(5 + K) / 2, (6 + K) / 2].
    budget = (5.0 + num_maps.float() + rand((n,), generator, device)) / 2.0
    total = ((s1 + 2 * s2) * used).sum(1)
    scale = (budget / total).unsqueeze(1)
    s1 = (s1 * scale).clamp(max=0.95)
    s2 = (s2 * scale).clamp(max=0.95)

    ct, st, cp, sp = torch.cos(theta), torch.sin(theta), torch.cos(phi), torch.sin(phi)
    # A = R(theta) diag(s1, s2) R(phi) diag(1, flip)
    a = ct * s1 * cp - st * s2 * sp
    b = (-ct * s1 * sp - st * s2 * cp) * flip
    c = st * s1 * cp + ct * s2 * sp
    d = (-st * s1 * sp + ct * s2 * cp) * flip
    e = u[..., 5] * 2 - 1
    f = u[..., 6] * 2 - 1
    coeffs = torch.stack([a, b, e, c, d, f], dim=-1)
    det = (s1 * s2).clamp(min=1e-3) * used
    probs = det / det.sum(1, keepdim=True)
    return coeffs, probs


def chaos_game(
    coeffs: torch.Tensor,
    probs: torch.Tensor,
    *,
    num_points: int,
    num_iters: int,
    warmup: int = 4,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the chaos game for ``n`` systems with ``num_points`` walkers each, all at once.

    Walkers start at the fixed point of each system's first map (a point of the attractor), take
    ``warmup`` unrecorded steps to spread out, then ``num_iters`` recorded ones; every step is one set of
    tensor ops over all systems and walkers. Maps are chosen with ``probs`` quantised to 1/256.
    Returns the visited points ``x, y`` of shape ``(num_iters, n, num_points)`` and the index of the map
    that produced each of them (same shape, int64).
    """
    n, k, _ = coeffs.shape
    device = coeffs.device
    # 256-entry inverse-CDF table per system: random byte -> map -> global column of ``table``.
    edges = (torch.cumsum(probs, 1) * 256).round().clamp(max=256).long()  # (n, K)
    levels = torch.arange(256, device=device)
    local_lut = (levels.view(1, 256, 1) >= edges.view(n, 1, k)).sum(-1).clamp_(max=k - 1)  # (n, 256)
    row_lut = (local_lut + torch.arange(n, device=device).unsqueeze(1) * k).view(-1)
    table = coeffs.reshape(n * k, 6).t().contiguous()  # (6, n * K): gathered rows come out contiguous
    steps = warmup + num_iters
    draws = random_bytes((steps, n, num_points), generator, device)
    offsets = (torch.arange(n, device=device, dtype=torch.int32) * 256).view(1, n, 1)
    rows = row_lut.index_select(0, (draws.int() + offsets).view(-1)).view(steps, n * num_points)

    # Start at the fixed point p* = (I - A)^-1 b of map 0.
    a, b, e, c, d, f = coeffs[:, 0].unbind(-1)
    det = (1 - a) * (1 - d) - b * c
    x = (((1 - d) * e + b * f) / det).view(n, 1).expand(n, num_points).reshape(-1)
    y = ((c * e + (1 - a) * f) / det).view(n, 1).expand(n, num_points).reshape(-1)
    xs = torch.empty(num_iters, n * num_points, device=device)
    ys = torch.empty(num_iters, n * num_points, device=device)
    for t in range(steps):
        m = table.index_select(1, rows[t])  # (6, n * P)
        if t >= warmup:
            x_new, y_new = xs[t - warmup], ys[t - warmup]
        else:
            x_new, y_new = torch.empty_like(x), torch.empty_like(y)
        torch.addcmul(m[2], m[0], x, out=x_new).addcmul_(m[1], y)
        torch.addcmul(m[5], m[3], x, out=y_new).addcmul_(m[4], y)
        x, y = x_new, y_new
    maps = rows[warmup:].view(num_iters, n, num_points) - torch.arange(n, device=device).view(1, n, 1) * k
    return xs.view(num_iters, n, num_points), ys.view(num_iters, n, num_points), maps


def _render(
    xs: torch.Tensor, ys: torch.Tensor, maps: torch.Tensor, palette: torch.Tensor, size: int, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hit counts ``(n, size, size)``, mean hit colour ``(n, 3, size, size)`` and extent ``(n,)``.

    ``xs, ys`` are ``(T, n, P)`` points and ``maps`` the map that produced each. A hit takes the colour of
    its map, so each of the ``K`` sub-copies that make up the attractor has its own hue; hits are counted
    per (pixel, map) in one ``bincount`` and the colours averaged per pixel.
    """
    _, n, _ = xs.shape
    k = palette.shape[1]
    device = xs.device
    xlo, xhi = torch.aminmax(xs, dim=2)
    ylo, yhi = torch.aminmax(ys, dim=2)
    xlo, xhi, ylo, yhi = xlo.amin(0), xhi.amax(0), ylo.amin(0), yhi.amax(0)
    extent = torch.maximum(xhi - xlo, yhi - ylo).clamp(min=1e-6)  # same scale on both axes
    gain = (size * (1 - 2 * margin) / extent).view(1, n, 1)
    px = ((xs - ((xlo + xhi) / 2).view(1, n, 1)) * gain + size / 2).clamp_(0, size - 1).to(torch.int32)
    py = ((ys - ((ylo + yhi) / 2).view(1, n, 1)) * gain + size / 2).clamp_(0, size - 1).to(torch.int32)
    base = (torch.arange(n, device=device, dtype=torch.int32) * (size * size)).view(1, n, 1)
    index = ((py * size + px + base) * k + maps.to(torch.int32)).view(-1)
    counts = torch.bincount(index, minlength=n * size * size * k).view(n, size * size, k).float()
    colsum = torch.bmm(counts, palette)  # (n, size*size, 3)
    hits = counts.sum(-1)
    colour = (colsum / hits.clamp(min=1).unsqueeze(-1)).transpose(1, 2).reshape(n, 3, size, size)
    return hits.view(n, size, size), colour, extent


def _interp_matrix(cells: int, size: int, device: torch.device) -> torch.Tensor:
    """``(size, cells + 1)`` linear-interpolation weights from a ``cells + 1`` lattice to ``size`` pixels."""
    pos = torch.linspace(0, cells, size, device=device)
    left = pos.floor().clamp(max=cells - 1)
    frac = pos - left
    w = torch.zeros(size, cells + 1, device=device)
    w.scatter_(1, left.long().unsqueeze(1), (1 - frac).unsqueeze(1))
    w.scatter_add_(1, left.long().unsqueeze(1) + 1, frac.unsqueeze(1))
    return w


def _plasma(m: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Smooth random colour fields ``(m, 3, size, size)`` in [0, 1]: three octaves of value noise."""
    out = torch.zeros(m * 3, size, size, device=device)
    total = 0.0
    for cells, amp in ((2, 1.0), (4, 0.5), (8, 0.25)):
        w = _interp_matrix(cells, size, device)
        noise = rand((m * 3, cells + 1, cells + 1), generator, device)
        out.add_(w @ noise @ w.t(), alpha=amp)  # separable bilinear upsampling as two matmuls
        total += amp
    return out.div_(total).view(m, 3, size, size)


def generate_fractals(
    n: int,
    size: int = 32,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    points_per_pixel: float = 6.0,
    min_coverage: float = 0.08,
    max_coverage: float = 0.75,
    background: bool = True,
    chunk_bins: int = 2**19,
) -> torch.Tensor:
    """``n`` RGB fractal images ``(n, 3, size, size)`` in ``[0, 1]``, deterministic given ``seed`` and device.

    ``points_per_pixel`` sets the chaos-game budget (recorded points per canvas pixel); systems whose hits
    cover less than ``min_coverage`` or more than ``max_coverage`` of the canvas are replaced by new ones.
    Systems are processed in chunks of about ``chunk_bins / (4 size^2)`` to bound memory.
    """
    if n < 0 or size < 4:
        raise ValueError(f"generate_fractals needs n >= 0 and size >= 4, got n={n}, size={size}")
    from kornia.color import hsv_to_rgb  # lazy: kornia takes a second to import
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    max_maps = 4
    walkers = max(64, min(4096, size * size // 4))
    iters = max(8, math.ceil(points_per_pixel * size * size / walkers))
    chunk = max(1, chunk_bins // (size * size * max_maps))
    out: list[torch.Tensor] = []
    have = 0
    while have < n:
        m = min(chunk, max(8, math.ceil((n - have) * 1.4)))
        coeffs, probs = sample_ifs(m, generator=gen, device=device, max_maps=max_maps)
        hue = rand((m, 1), gen, device) + rand((m, max_maps), gen, device) * 0.5
        sat = 0.4 + 0.6 * rand((m, max_maps), gen, device)
        val = 0.75 + 0.25 * rand((m, max_maps), gen, device)
        hsv = torch.stack([(hue % 1.0) * 2 * math.pi, sat, val], dim=1).unsqueeze(-1)  # (m, 3, K, 1)
        palette = hsv_to_rgb(hsv).squeeze(-1).transpose(1, 2).contiguous()  # (m, K, 3)
        warmup = 4
        xs, ys, maps = chaos_game(coeffs, probs, num_points=walkers, num_iters=iters, warmup=warmup, generator=gen)
        hits, colour, extent = _render(xs, ys, maps, palette, size, margin=0.06)
        coverage = (hits > 0).float().mean((1, 2))
        ok = (coverage >= min_coverage) & (coverage <= max_coverage) & (extent > 1e-3) & torch.isfinite(extent)
        keep = ok.nonzero().squeeze(1)  # a host sync per chunk; generation is a one-off
        hits, colour = hits[keep], colour[keep]
        kept = hits.shape[0]
        density = torch.log1p(hits)
        density = density / density.amax((1, 2), keepdim=True).clamp(min=1e-6)
        alpha = density.sqrt().unsqueeze(1)  # lift faint regions
        fg = (colour * (0.8 + 0.4 * rand((kept, 1, 1, 1), gen, device))).clamp(0, 1)
        if background:
            bg = _plasma(kept, size, gen, device) * (0.15 + 0.35 * rand((kept, 1, 1, 1), gen, device))
            img = bg * (1 - alpha) + fg * alpha
        else:
            img = fg * alpha
        out.append(img.clamp(0, 1))
        have += kept
    if not out:
        return torch.zeros(0, 3, size, size, device=device)
    return torch.cat(out)[:n].contiguous()
