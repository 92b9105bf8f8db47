"""Randomized / denoised smoothing: the analytic linear case, Clopper-Pearson and the binomial test against
statsmodels / scipy, the denoiser's (2x - 1, 2 sigma) call, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robaug.diffusion import CallableDenoiser
from robaug.eval.certify import certify, predict
from robaug.eval.intervals import betainc, binom_test_half, clopper_pearson, clopper_pearson_lower, wilson


class Linear2(nn.Module):
    """Two-class linear classifier on 1x4x4 images: logits (0, w.x + b), ||w|| = 1, hyperplane through 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((16,), 0.25), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([torch.zeros_like(z), z], 1)


DISTANCES = torch.tensor([-0.6, -0.3, -0.1, 0.05, 0.2, 0.45, 0.7], dtype=torch.float64)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    # x = 0.5 + d w / ||w||: signed distance d to the hyperplane, inside [0, 1]
    x = (0.5 + DISTANCES[:, None] * 0.25).float().expand(-1, 16).reshape(-1, 1, 4, 4).contiguous()
    return x, (DISTANCES > 0).long()


def test_linear_classifier_radius_below_distance_and_converges() -> None:
    x, y = _images()
    sigma = 0.25
    d = DISTANCES.abs().numpy()
    gaps = []
    for n in (1_000, 100_000):
        g = torch.Generator().manual_seed(1)
        res = certify(Linear2(), x, y, sigma=sigma, n0=100, n=n, alpha=0.001, batch_size=50_000, generator=g)
        r = res.radii.numpy()
        # smoothed probability Phi(d / sigma): the certified radius sigma Phi^-1(p_lower) never exceeds d
        assert (r <= d + 1e-9).all(), (r, d)
        certified = res.predictions >= 0
        assert (res.predictions[certified] == y[certified]).all()
        assert (res.radii[~certified] == 0).all()
        gaps.append(d - r)
    # at n = 100,000 every image is certified and the radius is within Monte-Carlo slack of d:
    # the Clopper-Pearson shortfall is ~ sigma z_{1-alpha} sqrt(p(1-p)/n) / phi(d/sigma) < 0.02 sigma here
    assert (gaps[1] < 0.03 * sigma / np.maximum(np.exp(-0.5 * (d / sigma) ** 2), 0.02) + 1e-3).all(), gaps[1]
    assert gaps[1].mean() < 0.35 * gaps[0].mean()


def test_certify_accuracy_curve_and_abstain() -> None:
    x, y = _images()
    res = certify(Linear2(), x, y, sigma=0.25, n0=100, n=2000, generator=torch.Generator().manual_seed(0),
                  batch_size=4096)
    assert res.predictions.dtype == torch.int64 and res.predictions.shape == (7,)
    expect0 = float(((res.predictions == y) & (res.radii >= 0)).double().mean())
    assert res.certified_accuracy(0.0) == pytest.approx(expect0)
    assert res.certified_accuracy(0.3) == pytest.approx(
        float(((res.predictions == y) & (res.radii >= 0.3)).double().mean()))
    radii, acc = res.curve([0.0, 0.1, 0.3, 10.0])
    assert list(radii) == [0.0, 0.1, 0.3, 10.0] and acc[-1] == 0.0 and (np.diff(acc) <= 0).all()
    assert res.abstain_rate == pytest.approx(float((res.predictions == -1).double().mean()))
    # an image on the hyperplane is abstained on
    on_plane = torch.full((1, 1, 4, 4), 0.5)
    r2 = certify(Linear2(), on_plane, [1], sigma=0.25, n0=100, n=2000, generator=torch.Generator().manual_seed(0))
    assert r2.predictions.item() == -1 and r2.radii.item() == 0.0 and r2.abstain_rate == 1.0


def test_certify_deterministic_given_generator() -> None:
    x, y = _images()
    a = certify(Linear2(), x, y, sigma=0.5, n0=50, n=500, generator=torch.Generator().manual_seed(3), batch_size=333)
    b = certify(Linear2(), x, y, sigma=0.5, n0=50, n=500, generator=torch.Generator().manual_seed(3), batch_size=333)
    assert torch.equal(a.radii, b.radii) and torch.equal(a.predictions, b.predictions)


def test_predict_binomial_test() -> None:
    x, y = _images()
    res = predict(Linear2(), x, y, sigma=0.25, n=2000, alpha=0.001, generator=torch.Generator().manual_seed(0))
    far = DISTANCES.abs() > 0.25
    assert (res.predictions[far] == y[far]).all()
    on_plane = torch.full((4, 1, 4, 4), 0.5)
    r2 = predict(Linear2(), on_plane, sigma=0.25, n=500, alpha=0.001, generator=torch.Generator().manual_seed(0))
    assert (r2.predictions == -1).all()  # p = 1/2 exactly: the test must (almost surely) not reject


def test_clopper_pearson_matches_statsmodels_and_scipy() -> None:
    from scipy import stats
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 10_000, 50_000):
        k = np.unique(np.concatenate([[0, 1, n // 2, n - 1, n], rng.integers(0, n + 1, 12)]))
        k = k[(k >= 0) & (k <= n)]
        for alpha in (0.001, 0.05):
            lo = clopper_pearson_lower(k, n, alpha)
            ref = np.nan_to_num(np.array([proportion_confint(int(v), n, alpha=2 * alpha, method="beta")[0] for v in k]))
            np.testing.assert_allclose(lo, ref, atol=1e-12, rtol=1e-10)
            lo2, hi2 = clopper_pearson(k, n, alpha)
            ref2 = np.nan_to_num(np.array([proportion_confint(int(v), n, alpha=alpha, method="beta") for v in k]),
                                 nan=1.0)
            np.testing.assert_allclose(lo2, np.where(k == 0, 0.0, ref2[:, 0]), atol=1e-12)
            np.testing.assert_allclose(hi2, np.where(k == n, 1.0, ref2[:, 1]), atol=1e-12)
        pv = binom_test_half(k, n)
        ref_p = np.array([stats.binomtest(int(v), n, 0.5).pvalue for v in k])
        np.testing.assert_allclose(pv, ref_p, rtol=1e-9, atol=1e-14)
    a, b, xs = np.array([0.5, 3.0, 200.0, 9000.0]), np.array([0.7, 2.0, 300.0, 11.0]), np.linspace(0, 1, 9)
    for ai, bi in zip(a, b):
        np.testing.assert_allclose(betainc(ai, bi, xs), stats.beta.cdf(xs, ai, bi), atol=1e-12)


def test_wilson_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 10), (3, 10), (10, 10), (873, 1000)):
        np.testing.assert_allclose(wilson(k, n), proportion_confint(k, n, alpha=0.05, method="wilson"), atol=1e-9)


class Recorder:
    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.sigmas: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        self.inputs.append(x.clone())
        self.sigmas.append(sigma.clone())
        return torch.full_like(x, 0.5)  # x0_hat = 0.5 in [-1, 1]: the classifier must see 0.75


class SeesInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 3)


def test_denoised_smoothing_calls_denoiser_in_minus_one_one_view_with_twice_sigma() -> None:
    rec = Recorder()
    den = CallableDenoiser(rec, in_channels=1)
    clf = SeesInput()
    x = torch.rand(3, 1, 8, 8)
    sigma = 0.25
    certify(clf, x, sigma=sigma, denoiser=den, n0=10, n=200, batch_size=150, generator=torch.Generator().manual_seed(0))
    sig = torch.cat(rec.sigmas)
    assert torch.allclose(sig, torch.full_like(sig, 2 * sigma))
    z = torch.cat(rec.inputs)
    assert z.shape[0] == 3 * 210
    # copies are streamed image by image: selection copies (10 per image) then estimation copies (200 per image)
    owners = torch.cat([torch.arange(3).repeat_interleave(10), torch.arange(3).repeat_interleave(200)])
    clean = 2 * x[owners] - 1
    eps = (z - clean) / (2 * sigma)  # z = 2 (x + sigma eps) - 1: unit Gaussian noise
    assert abs(float(eps.mean())) < 0.02 and abs(float(eps.std()) - 1.0) < 0.02
    seen = torch.cat(clf.seen)
    assert torch.allclose(seen, torch.full_like(seen, 0.75))


def test_denoised_smoothing_pads_for_the_denoiser() -> None:
    rec = Recorder()
    den = CallableDenoiser(rec, in_channels=1, size_multiple=4)
    clf = SeesInput()
    certify(clf, torch.rand(2, 1, 6, 6), sigma=0.5, denoiser=den, n0=2, n=4, generator=torch.Generator().manual_seed(0))
    assert rec.inputs[0].shape[-2:] == (8, 8) and clf.seen[0].shape[-2:] == (6, 6)


def test_bad_input() -> None:
    x, y = _images()
    with pytest.raises(ValueError, match="sigma"):
        certify(Linear2(), x, y, sigma=0.0)
    with pytest.raises(ValueError, match="n0"):
        certify(Linear2(), x, y, sigma=0.25, n0=100, n=50)
    for alpha in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            certify(Linear2(), x, y, sigma=0.25, alpha=alpha)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        certify(Linear2(), x * 4 - 2, y, sigma=0.25, n0=2, n=2)
    with pytest.raises(ValueError, match="shape"):
        certify(Linear2(), torch.rand(16), sigma=0.25, n0=2, n=2)
    with pytest.raises(ValueError, match="logits"):
        certify(lambda t: t.flatten(1).sum(1), x, sigma=0.25, n0=2, n=2)  # (B,) instead of (B, K)
    with pytest.raises(ValueError, match="labels"):
        certify(Linear2(), x, y[:3], sigma=0.25, n0=2, n=2)
    with pytest.raises(TypeError, match="denoiser"):
        certify(Linear2(), x, y, sigma=0.25, n0=2, n=2, denoiser=object())


def test_generator_on_other_device_is_used_there() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA for a cross-device generator")
    x, y = _images()
    res = certify(Linear2().cuda(), x, y, sigma=0.25, n0=10, n=100, generator=torch.Generator().manual_seed(0))
    assert res.radii.device.type == "cpu"


@pytest.mark.slow
def test_registry_name_denoiser_is_loaded() -> None:
    # the built-in Fashion-MNIST denoiser ships with the package: a registry name works offline
    clf = SeesInput()
    res = certify(clf, torch.rand(1, 1, 28, 28), [0], sigma=0.25, denoiser="fmnist-ddpm", n0=2, n=4,
                  generator=torch.Generator().manual_seed(0))
    seen = torch.cat(clf.seen)
    assert seen.shape == (6, 1, 28, 28) and 0 <= float(seen.min()) and float(seen.max()) <= 1
    assert res.settings["denoised"] is True
