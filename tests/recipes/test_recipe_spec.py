"""robaug.recipes.spec: the recipe table, the views of every recipe and the loss each one trains with."""

from __future__ import annotations

import pytest
import torch

from robaug.recipes.augment import RECIPES, get_recipe, js_divergence, recipe_loss


def _ce(logits, y):
    return -(logits.log_softmax(1)[torch.arange(len(y)), y]).mean()


def _js(a, b, c):
    ps = [z.softmax(1) for z in (a, b, c)]
    m = ((ps[0] + ps[1] + ps[2]) / 3).clamp(1e-7, 1)
    return sum((p * (p.log() - m.log())).sum(1).mean() for p in ps) / 3


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_loss_terms(name):
    spec = RECIPES[name]
    torch.manual_seed(0)
    b = 5
    y = torch.randint(0, 7, (b,))
    logits = torch.randn(spec.num_views * b, 7) * 3
    loss, terms = recipe_loss(logits, y, spec, jsd_weight=12.0)
    chunks = logits.split(b)
    expected = {"ce": _ce(chunks[0], y)}
    if spec.diffaug:
        expected["ce_diffaug"] = _ce(chunks[1], y)
    if spec.jsd:
        expected["jsd"] = 12.0 * _js(chunks[0], chunks[-2], chunks[-1])
    if spec.adversarial:  # TRADES: beta * KL(p_clean || p_adv), default beta 5
        p = chunks[0].softmax(1)
        expected["trades_kl"] = 5.0 * (p * (chunks[0].log_softmax(1) - chunks[-1].log_softmax(1))).sum(1).mean()
    assert set(terms) == set(expected)
    for k in expected:
        torch.testing.assert_close(terms[k], expected[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, sum(expected.values()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="views"):
        recipe_loss(logits[:-1], y, spec)


def test_recipe_view_layout():
    assert RECIPES["baseline"].view_names == ("clean",)
    assert RECIPES["ipmix"].view_names == ("ipmix",)
    assert RECIPES["diffaug"].view_names == ("clean", "diffaug")
    assert RECIPES["ipmix_jsd"].view_names == ("clean", "ipmix1", "ipmix2")
    assert RECIPES["diffaug_ipmix_jsd"].view_names == ("clean", "diffaug", "ipmix1", "ipmix2")
    assert RECIPES["trades"].view_names == ("clean", "adversarial")
    assert get_recipe("DiffAug+IPMix-JSD") is RECIPES["diffaug_ipmix_jsd"]
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("cutmix")


def test_js_divergence_properties():
    torch.manual_seed(0)
    a = torch.randn(4, 10)
    assert float(js_divergence(a, a, a)) == pytest.approx(0.0, abs=1e-6)
    b, c = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(js_divergence(a, b, c), _js(a, b, c), rtol=1e-5, atol=1e-6)
