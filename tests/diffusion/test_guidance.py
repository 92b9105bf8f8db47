"""Classifier-free guidance and gradient guidance terms against hand-computed gradients and autograd."""

import math

import pytest
import torch
from diffusers import UNet2DModel
from torch import nn

from robaug.diffusion import CallableDenoiser, DiffusersDenoiser
from robaug.diffusion.guidance import ClassifierGuidance, GuidanceTerm, GuidedDenoiser, guidance_weight
from robaug.diffusion.samplers import GuidedDiffusion

C, H, W = 1, 3, 3
K = 4  # classes


def linear_denoiser(calls=None):
    """D(x, s, y) = a(s) x + b_y with a(s) = 1 / (1 + s^2): linear in x, class-dependent offset."""
    offsets = torch.linspace(-0.5, 0.5, K + 1, dtype=torch.float64)  # index K = null label

    def fn(x, s, y):
        if calls is not None:
            calls.append(int(x.shape[0]))
        a = (1.0 / (1.0 + s.to(x.dtype) ** 2)).view(-1, 1, 1, 1)
        return a * x + offsets.to(x.dtype)[y].view(-1, 1, 1, 1)

    return CallableDenoiser(fn, in_channels=C, sample_size=H, num_classes=K, null_label=K)


class LinearClassifier(nn.Module):
    """logits = W vec(img) + b on [0, 1] images."""

    def __init__(self, noisy: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(K, C * H * W, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(K, generator=g, dtype=torch.float64))
        self.noisy = noisy
        self.seen_sigma = None

    def forward(self, img, sigma=None):
        self.seen_sigma = sigma
        return img.flatten(1).to(self.W.dtype) @ self.W.t() + self.b


def expected_grad(clf, img, y):
    """d log softmax(W v + b)_y / d v = W_y - sum_k p_k W_k."""
    p = torch.softmax(img.flatten(1) @ clf.W.t() + clf.b, dim=1)
    return (clf.W[y] - p @ clf.W).view(-1, C, H, W)


@pytest.fixture
def x():
    return torch.randn(5, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2


def test_cfg_combines_conditional_and_unconditional(x):
    calls = []
    D = linear_denoiser(calls)
    y = torch.tensor([0, 1, 2, 3, 1])
    sigma = 0.7
    s = torch.full((5,), sigma, dtype=torch.float64)
    d_c, d_u = D(x, s, y), D(x, s, None)
    for w in (0.0, 1.0, 2.5):
        calls.clear()
        out = GuidedDenoiser(D, cfg_scale=w)(x, sigma, y)
        torch.testing.assert_close(out, d_u + w * (d_c - d_u), rtol=0, atol=1e-12)
        assert calls == ([10] if w not in (0.0, 1.0) else [5])  # one batched call, doubled only when needed


@pytest.mark.parametrize("through", [True, False])
def test_x0_classifier_guidance_gradient_is_the_hand_computed_one(x, through):
    D = linear_denoiser()
    clf = LinearClassifier()
    y = torch.tensor([0, 1, 2, 3, 1])
    sigma, scale = 1.3, 0.8
    g = GuidedDenoiser(D, terms=[ClassifierGuidance(clf, scale, weighting="score")], grad_through_denoiser=through)
    out = g(x, sigma, y)
    a = 1.0 / (1.0 + sigma**2)
    d = D(x, torch.tensor(sigma, dtype=torch.float64), y)
    # J = log p(y | (x0_hat + 1) / 2), x0_hat = a x + b_y  =>  dJ/dx = a * 0.5 * (W_y - E_p W)
    grad_x0 = 0.5 * expected_grad(clf, d * 0.5 + 0.5, y)
    grad = a * grad_x0 if through else grad_x0
    torch.testing.assert_close(out, d + scale * sigma**2 * grad, rtol=0, atol=1e-10)
    assert all(p.grad is None for p in clf.parameters())  # the classifier's weights are not touched
    # the default in x0 mode: a fixed-size step on the denoised estimate (lambda = 1)
    out_c = GuidedDenoiser(D, terms=[ClassifierGuidance(clf, scale)], grad_through_denoiser=through)(x, sigma, y)
    torch.testing.assert_close(out_c, d + scale * grad, rtol=0, atol=1e-10)


def test_xt_classifier_guidance_with_eps_weighting(x):
    D = linear_denoiser()
    clf = LinearClassifier(noisy=True)
    y = torch.tensor([3, 3, 0, 1, 2])
    sigma, scale = 2.0, 0.3
    g = GuidedDenoiser(D, terms=[ClassifierGuidance(clf, scale, mode="xt", weighting="eps")])
    out = g(x, sigma, y)
    c = 1.0 / math.sqrt(1 + sigma**2)
    d = D(x, torch.tensor(sigma, dtype=torch.float64), y)
    # J = log p(y | x_t) with x_t = c x  =>  dJ/dx = c (W_y - E_p W); eps weighting: sigma sqrt(1 + sigma^2)
    grad = c * expected_grad(clf, x * c, y)
    torch.testing.assert_close(out, d + scale * sigma * math.sqrt(1 + sigma**2) * grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(clf.seen_sigma, torch.full((5,), sigma, dtype=torch.float64))


class Quadratic(GuidanceTerm):
    """J = -0.5 * ||inp - target||^2 per sample: gradient target - inp."""

    def __init__(self, target, scale, space, **kw):
        super().__init__(scale, space=space, **kw)
        self.target = target

    def objective(self, inp, sigma, class_labels):
        return -0.5 * ((inp - self.target) ** 2).flatten(1).sum(1)


def test_terms_compose_and_respect_their_sigma_window(x):
    D = linear_denoiser()
    clf = LinearClassifier()
    y = torch.tensor([0, 1, 2, 3, 0])
    sigma = 0.9
    a = 1.0 / (1.0 + sigma**2)
    t1 = ClassifierGuidance(clf, 0.5, weighting="score")
    t2 = Quadratic(0.25, 2.0, "xt")  # xt space: "score" weighting by default
    t3 = Quadratic(-0.1, 1.5, "x0", sigma_range=(5.0, 10.0), weighting="score")  # inactive at sigma 0.9
    out = GuidedDenoiser(D, terms=[t1, t2, t3])(x, sigma, y)
    d = D(x, torch.tensor(sigma, dtype=torch.float64), y)
    g1 = a * 0.5 * expected_grad(clf, d * 0.5 + 0.5, y)
    g2 = 0.25 - x
    torch.testing.assert_close(out, d + sigma**2 * (0.5 * g1 + 2.0 * g2), rtol=0, atol=1e-10)
    out3 = GuidedDenoiser(D, terms=[t3])(x, 6.0, y)
    d3 = D(x, torch.tensor(6.0, dtype=torch.float64), y)
    torch.testing.assert_close(out3, d3 + 1.5 * 36.0 * (1 / 37.0) * (-0.1 - d3), rtol=0, atol=1e-10)


def test_gradient_through_a_real_unet_equals_autograd():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=3,
    ).eval()
    D = DiffusersDenoiser(unet, {"num_train_timesteps": 1000}, null_label=2)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 0])
    sigma, w, scale = 3.0, 2.0, 0.5
    out = GuidedDenoiser(D, cfg_scale=w, terms=[ClassifierGuidance(clf, scale, weighting="score")])(x, sigma, y)

    xr = x.clone().requires_grad_(True)
    s = torch.full((2,), sigma)
    d = D(xr, s, None) + w * (D(xr, s, y) - D(xr, s, None))
    logp = torch.log_softmax(clf(d * 0.5 + 0.5), 1)[torch.arange(2), y].sum()
    (grad,) = torch.autograd.grad(logp, xr)
    torch.testing.assert_close(out, d.detach() + scale * sigma**2 * grad, rtol=1e-4, atol=1e-5)
    # a float32 classifier inside the default float64 sampler state
    imgs = GuidedDiffusion(D, num_steps=3, cfg_scale=w, classifier=clf, classifier_scale=scale)(y, seeds=[0, 1])
    assert imgs.shape == (2, 1, 8, 8) and torch.isfinite(imgs).all()


def test_classifier_guidance_raises_the_classifier_probability():
    """End to end: guiding a class-agnostic Gaussian denoiser towards a linear classifier's classes."""
    D = CallableDenoiser(lambda x, s, y: x / (1 + s.to(x.dtype).view(-1, 1, 1, 1) ** 2), in_channels=C, sample_size=H,
                         sigma_min=0.01, sigma_max=20.0)
    clf = LinearClassifier()
    y = torch.arange(8) % K
    seeds = list(range(8))
    plain = GuidedDiffusion(D, num_steps=10)(y, seeds=seeds)
    guided = GuidedDiffusion(D, num_steps=10, classifier=clf, classifier_scale=2.0)(y, seeds=seeds)

    def mean_logp(img):
        return torch.log_softmax(clf(img.double()), 1)[torch.arange(8), y].mean()

    assert mean_logp(guided) > mean_logp(plain) + 0.5


def test_guidance_weight_and_errors():
    assert guidance_weight(2.0, "score") == 4.0
    assert abs(guidance_weight(2.0, "eps") - 2.0 * math.sqrt(5.0)) < 1e-12
    assert guidance_weight(2.0, "constant") == 1.0
    assert guidance_weight(2.0, lambda s: 3.0) == 3.0
    with pytest.raises(ValueError, match="weighting"):
        guidance_weight(1.0, "snr")
    with pytest.raises(ValueError, match="mode"):
        ClassifierGuidance(LinearClassifier(), mode="eps")
    with pytest.raises(ValueError, match="class_labels"):
        GuidedDiffusion(linear_denoiser(), num_steps=2, classifier=LinearClassifier())(num_samples=2)
    with pytest.raises(ValueError, match="sigma_range"):
        Quadratic(0.0, 1.0, "x0", sigma_range=(2.0, 1.0))
