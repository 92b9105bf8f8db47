"""TRADES: the loss against hand-written references with the same random draws, the attack's constraints,
BatchNorm statistics left alone by the attack."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robaug.losses import TRADESLoss, frozen_bn_stats, trades_attack, trades_loss, trades_objective


def _bn_model(c: int = 1, k: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, k))


def _ref_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax p || softmax q) summed over classes, averaged over the batch, written out."""
    p = logits_p.softmax(1)
    return (p * (logits_p.log_softmax(1) - logits_q.log_softmax(1))).sum(1).mean()


def _ref_ce_ls(logits: torch.Tensor, y: torch.Tensor, s: float) -> torch.Tensor:
    k = logits.shape[1]
    target = torch.full_like(logits, s / k)
    target[torch.arange(len(y)), y] += 1.0 - s
    return -(target * logits.log_softmax(1)).sum(1).mean()


def test_steps0_linf_is_ce_ls_plus_beta_kl_of_the_uniform_start():
    model = _bn_model()
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))
    eps, beta = 0.1, 5.0
    ref_model = copy.deepcopy(model)
    out = trades_loss(model, x, y, eps=eps, step_size=0.02, steps=0, beta=beta,
                      generator=torch.Generator().manual_seed(3), return_outputs=True)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    x_adv = (x + (2 * u - 1) * eps).clamp(0, 1)
    torch.testing.assert_close(out.x_adv, x_adv)
    lc, la = ref_model(x), ref_model(x_adv)  # train mode, two forwards, as trades_loss does
    ce, kl = _ref_ce_ls(lc, y, 0.1), _ref_kl(lc, la)
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.kl, beta * kl)
    torch.testing.assert_close(out.loss, ce + beta * kl)
    # the gradient flows through both forwards, like the reference objective
    out.loss.backward()
    (ce + beta * kl).backward()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    # the running statistics saw the clean and the adversarial batch (2 forwards), not the attack's forward
    torch.testing.assert_close(model[1].running_mean, ref_model[1].running_mean)
    assert int(model[1].num_batches_tracked) == 2


def test_steps0_l2_start_is_small_gaussian():
    model = _bn_model()
    x = torch.rand(3, 1, 8, 8)
    x_adv = trades_attack(model, x, eps=0.5, step_size=0.1, steps=0, norm="l2",
                          generator=torch.Generator().manual_seed(1))
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x_adv, (x + 0.001 * n).clamp(0, 1))


class _Linear(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_one_linf_step_matches_the_analytic_kl_gradient_sign_step():
    """f(x) = W x + b: grad_x KL(p || softmax f(x)) = W^T (softmax f(x) - p)."""
    torch.manual_seed(0)
    model = _Linear(16, 4)
    x = torch.rand(5, 1, 4, 4) * 0.6 + 0.2
    eps, a = 0.05, 0.03
    got = trades_attack(model, x, eps=eps, step_size=a, steps=1, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        W, b = model.fc.weight, model.fc.bias
        p = (x.flatten(1) @ W.T + b).softmax(1)
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(7))
        x0 = (x + (2 * u - 1) * eps).clamp(0, 1)
        q = (x0.flatten(1) @ W.T + b).softmax(1)
        grad = ((q - p) @ W).view_as(x)
        x1 = (x0 + a * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    torch.testing.assert_close(got, x1)
    assert not torch.equal(got, x0)


def test_one_l2_step_matches_the_normalised_gradient_step():
    torch.manual_seed(1)
    model = _Linear(16, 3)
    x = torch.rand(4, 1, 4, 4) * 0.6 + 0.2
    eps, a = 0.3, 0.5  # a step longer than eps: the projection to the ball is active
    got = trades_attack(model, x, eps=eps, step_size=a, steps=1, norm="l2", generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        W, b = model.fc.weight, model.fc.bias
        p = (x.flatten(1) @ W.T + b).softmax(1)
        x0 = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        q = (x0.flatten(1) @ W.T + b).softmax(1)
        g = ((q - p) @ W)
        g = g / g.norm(dim=1, keepdim=True)
        delta = (x0.flatten(1) + a * g).clamp(0, 1) - x.flatten(1)
        delta = delta * (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1)
        ref = (x.flatten(1) + delta).view_as(x)
    # q - p is ~1e-3 after the 0.001-scale start: float32 cancellation limits the agreement of the direction
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-4)
    torch.testing.assert_close((got - x).flatten(1).norm(dim=1), torch.full((4,), eps))


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.04), ("l2", 0.8, 0.3)])
def test_attack_stays_in_the_ball_and_in_0_1(norm, eps, step):
    model = _bn_model(3)
    x = torch.rand(8, 3, 8, 8)
    x[0] = 0.0
    x[1] = 1.0  # at the box edges
    x_adv = trades_attack(model, x, eps=eps, step_size=step, steps=7, norm=norm,
                          generator=torch.Generator().manual_seed(0))
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not x_adv.requires_grad
    d = (x_adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
        assert d.abs().max() > 0.9 * eps  # the attack uses its budget
    else:
        assert d.norm(dim=1).max() <= eps + 1e-5
        assert d.norm(dim=1).max() > 0.5 * eps
    # it increases the KL it maximises
    model.eval()
    with torch.no_grad():
        lc = model(x)
        rnd = (x + (torch.rand_like(x) * 2 - 1) * (eps if norm == "linf" else 0.01)).clamp(0, 1)
        assert _ref_kl(lc, model(x_adv)) > _ref_kl(lc, model(rnd))


@pytest.mark.parametrize("bn_mode", ["batch", "eval"])
def test_attack_leaves_bn_statistics_and_modes_alone(bn_mode):
    model = _bn_model()
    model.train()
    model[1].running_mean.fill_(0.3)
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(6, 1, 8, 8)
    trades_attack(model, x, eps=0.1, step_size=0.03, steps=3, bn_mode=bn_mode)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and all(m.training for m in model.modules())
    assert model[1].track_running_stats
    assert all(p.grad is None for p in model.parameters())  # the attack takes no parameter gradient
    # the two modes differ: batch statistics vs running statistics
    a = trades_attack(model, x, eps=0.1, step_size=0.03, steps=2, bn_mode="batch",
                      generator=torch.Generator().manual_seed(0))
    b = trades_attack(model, x, eps=0.1, step_size=0.03, steps=2, bn_mode="eval",
                      generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, b)
    # an eval-mode model stays in eval mode
    model.eval()
    trades_attack(model, x, eps=0.1, step_size=0.03, steps=1, bn_mode=bn_mode)
    assert not any(m.training for m in model.modules())


def test_batch_mode_attack_uses_batch_statistics():
    model = _bn_model()
    model[1].running_mean.fill_(5.0)  # absurd running statistics: only eval mode would use them
    x = torch.rand(6, 1, 8, 8)
    with frozen_bn_stats(model, "batch"):
        inside = model(x)
    model_plain = copy.deepcopy(model).train()
    torch.testing.assert_close(inside, model_plain(x))
    assert float(model[1].running_mean.mean()) == 5.0


def test_module_form_determinism_and_errors():
    model = _bn_model()
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 5, (4,))
    m1 = TRADESLoss(eps=0.1, step_size=0.03, steps=2, beta=6.0, generator=torch.Generator().manual_seed(5))
    a = m1(copy.deepcopy(model), x, y)
    b = trades_loss(copy.deepcopy(model), x, y, eps=0.1, step_size=0.03, steps=2, beta=6.0,
                    generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert "beta=6.0" in repr(m1)
    with pytest.raises(ValueError, match="norm"):
        trades_attack(model, x, eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(TypeError, match="float"):
        trades_attack(model, (x * 255).to(torch.uint8), eps=0.1, step_size=0.1, steps=1)
    with pytest.raises(ValueError, match="bn_mode"):
        TRADESLoss(bn_mode="frozen")


def test_objective_terms():
    torch.manual_seed(0)
    lc, la, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,))
    loss, terms = trades_objective(lc, la, y, beta=3.0, label_smoothing=0.2)
    torch.testing.assert_close(terms["ce"], _ref_ce_ls(lc, y, 0.2))
    torch.testing.assert_close(terms["trades_kl"], 3.0 * _ref_kl(lc, la))
    torch.testing.assert_close(loss, terms["ce"] + terms["trades_kl"])
    _, same = trades_objective(lc, lc, y, beta=3.0)
    assert float(same["trades_kl"]) == pytest.approx(0.0, abs=1e-6)


def test_attack_moves_under_fp16_autocast_where_the_gradients_underflow():
    # a model with tiny input gradients: unscaled, the fp16 backward flushes them to zero and the attack stalls
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)
    x = torch.rand(32, 1, 8, 8)
    start = (x + (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1) * 0.1).clamp(0, 1)
    moved = {}
    for fp16 in (False, True):
        with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
            x_adv = trades_attack(model, x, eps=0.1, step_size=0.02, steps=3,
                                  generator=torch.Generator().manual_seed(0))
        moved[fp16] = ((x_adv - start).abs() > 1e-6).float().mean().item()
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert moved[False] > 0.9 and moved[True] > 0.9
