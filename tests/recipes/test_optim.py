"""robaug.recipes.optim: the learning-rate schedule and the weight EMA."""

from __future__ import annotations

import pytest
import torch

from robaug.recipes.train import ModelEMA, lr_at


def test_lr_schedule():
    assert lr_at(0, 100, 0.1, 10) == pytest.approx(0.01)
    assert lr_at(9, 100, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(55, 100, 0.1, 10) == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, 10) == pytest.approx(0.0, abs=1e-12)


def test_model_ema_update_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 3))  # moves the BN statistics and the counter
    ema.update(model, step=1000)
    for k, v in ema.module.state_dict().items():
        m = model.state_dict()[k]
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * m)
        else:
            assert torch.equal(v, m)
    ema.update(model, step=0)  # warm-up: decay min(0.9, 1/10) = 0.1
    w = ema.module[0].weight
    assert torch.allclose(w, model[0].weight, atol=0.2)
