"""Confidence intervals and binomial tail probabilities for the evaluation suites (numpy float64, no scipy).

- :func:`betainc`: the regularized incomplete beta function ``I_x(a, b)`` (continued fraction, modified Lentz),
  vectorised over its arguments.
- :func:`clopper_pearson` / :func:`clopper_pearson_lower`: exact binomial bounds from beta quantiles,
  ``lower = B^-1(alpha; k, n - k + 1)``, ``upper = B^-1(1 - alpha; k + 1, n - k)`` (one-sided level ``alpha``),
  found by bisection on ``I_p``; equal to statsmodels' ``proportion_confint(method="beta")`` and scipy's
  ``beta.ppf`` to ~1e-12.
- :func:`binom_test_half`: the two-sided binomial test of ``p = 1/2`` (scipy's ``binomtest(k, n).pvalue``).
- :func:`wilson`: Wilson's score interval for an accuracy.
- :func:`bootstrap_ci`: percentile bootstrap of any statistic of one or more independently resampled groups.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["betainc", "clopper_pearson", "clopper_pearson_lower", "binom_test_half", "wilson", "bootstrap_ci",
           "Z95"]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054

_TINY = 1e-300


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, max_iter: int = 100_000) -> np.ndarray:
    """Continued fraction of ``I_x(a, b)`` (Numerical Recipes' ``betacf``, modified Lentz), vectorised."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < _TINY, _TINY, d)
    d = 1.0 / d
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, max_iter + 1):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < _TINY, _TINY, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < _TINY, _TINY, c)
        d = 1.0 / d
        h = np.where(active, h * d * c, h)
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < _TINY, _TINY, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < _TINY, _TINY, c)
        d = 1.0 / d
        delta = d * c
        h = np.where(active, h * delta, h)
        active &= np.abs(delta - 1.0) > 3e-16
        if not active.any():
            return h
    raise RuntimeError("betainc: continued fraction did not converge")  # pragma: no cover


def betainc(a: Any, b: Any, x: Any) -> np.ndarray:
    """Regularized incomplete beta ``I_x(a, b)`` for ``a, b > 0`` and ``x`` in [0, 1] (float64 arrays)."""
    a, b, x = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(x, np.float64))
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("betainc: a and b must be > 0")
    if ((x < 0) | (x > 1)).any():
        raise ValueError("betainc: x must lie in [0, 1]")
    out = np.where(x >= 1.0, 1.0, 0.0)
    inner = (x > 0) & (x < 1)
    if not inner.any():
        return out
    a_, b_, x_ = a[inner], b[inner], x[inner]
    lgam = np.vectorize(math.lgamma, otypes=[np.float64])
    log_front = lgam(a_ + b_) - lgam(a_) - lgam(b_) + a_ * np.log(x_) + b_ * np.log1p(-x_)
    front = np.exp(log_front)
    direct = x_ < (a_ + 1.0) / (a_ + b_ + 2.0)  # the continued fraction converges fast on this side
    aa, bb, xx = np.where(direct, a_, b_), np.where(direct, b_, a_), np.where(direct, x_, 1.0 - x_)
    cf = front * _betacf(aa, bb, xx) / aa
    out[inner] = np.clip(np.where(direct, cf, 1.0 - cf), 0.0, 1.0)
    return out


def _beta_ppf(q: float, a: np.ndarray, b: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """``p`` with ``I_p(a, b) = q``: Newton steps on ``I_p - q`` (derivative: the beta density) kept inside a
    shrinking bisection bracket, so it converges like Newton and never leaves [0, 1]."""
    lgam = np.vectorize(math.lgamma, otypes=[np.float64])
    log_beta = lgam(a) + lgam(b) - lgam(a + b)
    lo, hi = np.zeros_like(a), np.ones_like(a)
    p = np.clip(a / (a + b), 1e-12, 1 - 1e-12)
    done = np.zeros(a.shape, dtype=bool)
    for _ in range(max_iter):
        f = betainc(a, b, p) - q
        lo, hi = np.where(f < 0, p, lo), np.where(f > 0, p, hi)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            pdf = np.exp((a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - log_beta)
            newton = p - f / pdf
        ok = np.isfinite(newton) & (newton >= lo) & (newton <= hi)
        p_new = np.where(done | (f == 0), p, np.where(ok, newton, 0.5 * (lo + hi)))
        done |= (np.abs(p_new - p) <= 1e-14 * np.maximum(p, 1e-300)) | (hi - lo <= 1e-300)
        p = p_new
        if done.all():
            break
    return p


def _counts(k: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
    if not (np.issubdtype(k.dtype, np.integer) or np.all(k == np.round(k))):
        raise ValueError("counts must be integers")
    k, n = k.astype(np.float64), n.astype(np.float64)
    if (n < 1).any() or (k < 0).any() or (k > n).any():
        raise ValueError("need 0 <= k <= n and n >= 1")
    return k, n


def _unique_apply(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Evaluate ``fn`` once per distinct ``(k, n)`` pair (certification has many repeated counts)."""
    pairs = np.stack([k.ravel(), n.ravel()], 1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    return fn(uniq[:, 0], uniq[:, 1])[inv.ravel()].reshape(k.shape)


def clopper_pearson_lower(k: Any, n: Any, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound of a binomial proportion: ``B^-1(alpha; k, n-k+1)``
    (0 when ``k = 0``). Cohen et al.'s ``lowerConfBound`` (``proportion_confint(k, n, alpha=2*alpha,
    method="beta")[0]``)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    k, n = _counts(k, n)

    def fn(kk: np.ndarray, nn: np.ndarray) -> np.ndarray:
        out = np.zeros_like(kk)
        pos = kk > 0
        if pos.any():
            out[pos] = _beta_ppf(alpha, kk[pos], nn[pos] - kk[pos] + 1.0)
        return out

    return _unique_apply(fn, k, n)


def clopper_pearson(k: Any, n: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``(1 - alpha)`` Clopper-Pearson interval ``(lower, upper)`` (``alpha / 2`` in each tail)."""
    k, n = _counts(k, n)
    lo = clopper_pearson_lower(k, n, alpha / 2)
    hi = 1.0 - clopper_pearson_lower(n - k, n, alpha / 2)
    return lo, hi


def binom_test_half(k: Any, n: Any) -> np.ndarray:
    """Two-sided p-value of the binomial test of ``p = 1/2``: ``min(1, 2 P(X >= max(k, n-k)))`` for
    ``X ~ Bin(n, 1/2)`` (1 when ``k = n - k``); scipy's ``binomtest(k, n, 0.5).pvalue``."""
    k, n = _counts(k, n)
    hi = np.maximum(k, n - k)
    tail = betainc(hi, n - hi + 1.0, 0.5)  # P(X >= hi) = I_{1/2}(hi, n - hi + 1), hi >= n/2 > 0
    return np.minimum(1.0, 2.0 * tail)


def wilson(k: Any, n: Any, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% by default)."""
    k, n = float(k), float(n)
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(
    stat: Callable[..., float],
    groups: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(*groups)``: every group is resampled with replacement on its own
    (stratified; e.g. in- and out-of-distribution scores), ``n_boot`` times with ``numpy``'s PCG64(``seed``)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for i in range(n_boot):  # a loop over replicates (each one vectorised), not over samples
        vals[i] = stat(*[g[rng.integers(0, len(g), len(g))] for g in groups])
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.nanpercentile(vals, [tail, 100 - tail])
    return float(lo), float(hi)
