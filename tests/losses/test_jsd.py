"""JSDLoss against a direct computation of CE + 12 * 1/3 sum_i KL(p_i || M) with M clamped at 1e-7."""

from __future__ import annotations

import math

import pytest
import torch

from robaug.losses.jsd import JSDLoss, js_divergence, jsd_loss


def _direct(logits3: list[torch.Tensor], target: torch.Tensor, weight: float = 12.0, smoothing: float = 0.0) -> float:
    """Plain-Python float64 reference: CE on the clean split + weight * mean_i sum_c p_i log(p_i / M) / B."""
    clean, a1, a2 = (z.double().tolist() for z in logits3)
    b, k = len(clean), len(clean[0])

    def softmax(row: list[float]) -> list[float]:
        mx = max(row)
        e = [math.exp(v - mx) for v in row]
        s = sum(e)
        return [v / s for v in e]

    ce = 0.0
    for i in range(b):
        p = softmax(clean[i])
        y = int(target[i])
        ce += -(1 - smoothing) * math.log(p[y]) - smoothing / k * sum(math.log(v) for v in p)
    ce /= b
    js = 0.0
    for i in range(b):
        ps = [softmax(z[i]) for z in (clean, a1, a2)]
        m = [min(max((ps[0][c] + ps[1][c] + ps[2][c]) / 3, 1e-7), 1.0) for c in range(k)]
        for p in ps:
            js += sum(p[c] * (math.log(p[c]) - math.log(m[c])) for c in range(k) if p[c] > 0)
    js /= 3 * b
    return ce + weight * js


def _logits(b: int = 5, k: int = 7, scale: float = 3.0, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, k, generator=g) * scale for _ in range(3)]


def test_matches_direct_computation():
    parts = _logits()
    target = torch.tensor([0, 3, 6, 1, 2])
    loss = JSDLoss()(torch.cat(parts), target)
    assert loss.item() == pytest.approx(_direct(parts, target), rel=1e-5)


def test_clamp_keeps_the_loss_finite_when_probabilities_underflow():
    # Class 0 gets probability exactly 0.0 in float32 in all three splits: log M = -inf without the clamp.
    parts = _logits(seed=1)
    for p in parts:
        p[:, 0] = -200.0
    target = torch.ones(5, dtype=torch.long)
    assert all((torch.softmax(p, 1)[:, 0] == 0).all() for p in parts)
    loss = JSDLoss()(parts, target)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(_direct(parts, target), rel=1e-5)
    assert not torch.isfinite(JSDLoss(clamp_min=0.0)(parts, target))


def test_label_smoothing_and_weight():
    parts = _logits(seed=2)
    target = torch.tensor([1, 1, 0, 4, 6])
    loss = JSDLoss(weight=3.0, label_smoothing=0.1)(parts, target)
    assert loss.item() == pytest.approx(_direct(parts, target, weight=3.0, smoothing=0.1), rel=1e-5)


def test_timm_style_repeated_targets_and_tuple_input():
    parts = _logits(seed=3)
    target = torch.tensor([2, 0, 1, 5, 3])
    a = jsd_loss(torch.cat(parts), target)
    b = jsd_loss(parts, target.repeat(3))  # timm's collate repeats targets for every split
    assert torch.allclose(a, b)


def test_identical_views_give_plain_cross_entropy_and_js_is_nonnegative():
    z = _logits(seed=4)[0]
    target = torch.tensor([0, 1, 2, 3, 4])
    assert js_divergence(z, z, z).item() == pytest.approx(0.0, abs=1e-7)
    loss = JSDLoss()([z, z, z], target)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(z, target).item(), rel=1e-6)
    assert js_divergence(*_logits(seed=5)).item() > 0


def test_gradients_flow_to_every_split():
    parts = [p.clone().requires_grad_() for p in _logits(seed=6)]
    JSDLoss()(parts, torch.tensor([0, 1, 2, 3, 4])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parts)


def test_half_precision_logits_computed_in_float32():
    parts = _logits(seed=7)
    target = torch.tensor([0, 1, 2, 3, 4])
    full = JSDLoss()(parts, target)
    half = JSDLoss()([p.half() for p in parts], target)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-2)


def test_bad_shapes_raise_clear_errors():
    parts = _logits()
    with pytest.raises(ValueError, match="equal parts"):
        JSDLoss()(torch.cat(parts)[:-1], torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="class indices"):
        JSDLoss()(parts, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="3 logit tensors"):
        JSDLoss()(parts[:2], torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_splits"):
        JSDLoss(num_splits=1)
    with pytest.raises(ValueError, match="at least two"):
        js_divergence(parts[0])
