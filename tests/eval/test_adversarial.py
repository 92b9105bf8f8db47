"""Adversarial evaluation: PGD against the closed-form worst case of linear models, its constraints, and
AutoAttack (pyautoattack) at least as strong as PGD on a small trained model."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from robaug.eval import autoattack_accuracy, pgd_accuracy, pgd_attack


class Linear(nn.Module):
    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(W)
            self.fc.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _linear_problem(k: int, n: int = 300, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g) * 0.1
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=g)  # inside [0.3, 0.7]: the [0, 1] box never binds
    with torch.no_grad():
        y = (x.flatten(1) @ W.T + b).argmax(1)
    flip = torch.rand(n, generator=g) < 0.1  # some misclassified samples too
    y = torch.where(flip, (y + 1) % k, y)
    return Linear(W, b), x, y, W, b


def _analytic_margin(x, y, W, b, eps, dual_norm):
    """Worst-case margin min_j (z_y - z_j - eps ||w_y - w_j||_*) over j != y (box constraint inactive)."""
    z = x.flatten(1) @ W.T + b
    worst = torch.full((len(y),), float("inf"))
    for j in range(W.shape[0]):
        diff = W[y] - W[j]
        m = z.gather(1, y[:, None])[:, 0] - z[:, j] - eps * diff.norm(p=dual_norm, dim=1)
        worst = torch.where(y == j, worst, torch.minimum(worst, m))
    return worst


def _analytic_robust(x, y, W, b, eps, dual_norm):
    """Correct under every perturbation ||delta|| <= eps iff z_y - z_j - eps ||w_y - w_j||_* > 0 for all j != y."""
    return _analytic_margin(x, y, W, b, eps, dual_norm) > 0


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("norm,dual", [("linf", 1), ("l2", 2)])
def test_pgd_equals_the_closed_form_on_a_binary_linear_model(norm, dual, loss):
    model, x, y, W, b = _linear_problem(2)
    eps = 0.15 if norm == "linf" else 0.3  # l_2: the worst-case delta stays < 0.3 per pixel
    ref = _analytic_robust(x, y, W, b, eps, dual)
    # l_2: the radial projection turns the iterate towards the optimum by a factor per step that depends on
    # step_size / eps, so long steps
    res = pgd_accuracy(model, x, y, eps=eps, steps=10, step_size=eps, norm=norm, loss=loss, batch_size=128,
                       generator=torch.Generator().manual_seed(0))
    assert 0.2 < float(ref.float().mean()) < 0.85  # a non-trivial case
    clear = _analytic_margin(x, y, W, b, eps, dual).abs() > 1e-3  # leave out float ties at the boundary
    assert clear.float().mean() > 0.95
    assert torch.equal(res.correct[clear], ref[clear])
    assert res.robust_accuracy == pytest.approx(float(ref.float().mean()), abs=0.01)
    assert res.clean_accuracy > res.robust_accuracy


def test_pgd_on_a_multiclass_linear_model():
    model, x, y, W, b = _linear_problem(5, seed=1)
    eps = 0.08
    ref = _analytic_robust(x, y, W, b, eps, 1)
    res = pgd_accuracy(model, x, y, eps=eps, steps=20, loss="margin", restarts=3,
                       generator=torch.Generator().manual_seed(0))
    assert 0.2 < float(ref.float().mean()) < 0.8
    assert bool((ref <= res.correct).all())  # sound: what is provably robust is never broken
    assert torch.equal(res.correct, ref)  # and here it finds every breakable sample
    weak = pgd_accuracy(model, x, y, eps=eps / 4, steps=20, loss="margin", generator=torch.Generator().manual_seed(0))
    assert weak.robust_accuracy > res.robust_accuracy


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_pgd_iterates_stay_in_the_ball_and_in_0_1(norm, eps):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    x = torch.rand(16, 3, 8, 8)
    x[:4] = x[:4].round()  # pixels at 0 and 1
    y = torch.randint(0, 10, (16,))
    x_adv, ok = pgd_attack(model, x, y, eps=eps, steps=5, norm=norm, restarts=2,
                           generator=torch.Generator().manual_seed(1))
    d = (x_adv - x).flatten(1)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (d.abs().amax(1) if norm == "linf" else d.norm(dim=1)).max() <= eps * (1 + 1e-5)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert torch.equal(fooled, ~ok)  # the returned x_adv is the evidence for every non-robust sample
    with pytest.raises(ValueError, match="norm"):
        pgd_attack(model, x, y, eps=eps, norm="l3")
    with pytest.raises(TypeError, match="float"):
        pgd_attack(model, (x * 255).to(torch.uint8), y, eps=eps)


def test_pgd_accuracy_takes_uint8_and_restores_the_mode():
    model, x, y, *_ = _linear_problem(3)
    u8 = (x * 255).round().to(torch.uint8)
    model.train()
    res = pgd_accuracy(model, u8, y, eps=0.0, steps=2)
    assert model.training
    with torch.no_grad():
        clean = (model(u8.float() / 255).argmax(1) == y).float().mean()
    assert res.clean_accuracy == pytest.approx(float(clean)) == pytest.approx(res.robust_accuracy)
    assert res.to_dict()["attack"] == "PGD-2"


@pytest.fixture(scope="module")
def trained_mlp():
    """A small MLP trained on 10 noisy class prototypes (8x8 grey images)."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(10, 1, 8, 8, generator=g)
    y = torch.arange(600) % 10
    x = (protos[y] + 0.25 * torch.randn(600, 1, 8, 8, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x[:500]), y[:500])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x[500:], y[500:]


def test_autoattack_is_at_least_as_strong_as_pgd(trained_mlp):
    pytest.importorskip("pyautoattack")
    model, x, y = trained_mlp
    eps = 0.2
    pgd = pgd_accuracy(model, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    aa = autoattack_accuracy(model, x, y, eps, "linf", version="custom", attacks=["apgd-ce", "apgd-t"], n_iter=20,
                             n_target_classes=3, batch_size=100)
    assert pgd.clean_accuracy > 0.8 and 0.1 < pgd.robust_accuracy < pgd.clean_accuracy  # non-trivial
    assert aa.clean_accuracy == pytest.approx(pgd.clean_accuracy)
    assert aa.robust_accuracy <= pgd.robust_accuracy + 0.02
    assert bool((aa.correct <= aa.clean_correct).all())
    assert aa.settings["attacks"] == ["apgd-ce", "apgd-t"] and aa.settings["n_iter"] == 20
    state = torch.get_rng_state()
    again = autoattack_accuracy(model, x, y, eps, "linf", version="custom", attacks=["apgd-ce", "apgd-t"], n_iter=20,
                                n_target_classes=3, batch_size=100)
    assert torch.equal(again.correct, aa.correct)  # seeded
    assert torch.equal(torch.get_rng_state(), state)  # and the global RNG is left alone


def test_autoattack_errors(trained_mlp, monkeypatch):
    model, x, y = trained_mlp
    with pytest.raises(ValueError, match="custom"):
        autoattack_accuracy(model, x, y, 0.1, version="custom")
    with pytest.raises(ValueError, match="version='custom'"):
        autoattack_accuracy(model, x, y, 0.1, attacks=["apgd-ce"])
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install pyautoattack.*robaug\[recipes\]"):
        autoattack_accuracy(model, x, y, 0.1)
