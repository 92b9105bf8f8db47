"""Contrastive-DP: losses against the paper's equations written as loops, the guidance term, the sampler."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robaug.diffusion import CallableDenoiser
from robaug.diffusion.contrastive import (
    ContrastiveGuidance,
    ContrastiveGuidedSampler,
    EmbeddingHead,
    PenultimateFeatures,
    hard_negative_loss,
    info_nce_loss,
)
from robaug.diffusion.guidance import GuidedDenoiser
from robaug.diffusion.samplers import GuidedDiffusion


def embeddings(b=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    z2 = F.normalize(z1 + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    return z1, z2


def hard_loss_loop(z1, z2, tau, tau_plus, beta):
    """Robinson et al. 2021 (as used by Contrastive-DP), one anchor at a time."""
    z = torch.cat([z1, z2])
    b = z1.shape[0]
    n = 2 * b - 2
    out = []
    for a in range(2 * b):
        p = (a + b) % (2 * b)
        pos = math.exp(float(z[a] @ z[p]) / tau)
        negs = [math.exp(float(z[a] @ z[k]) / tau) for k in range(2 * b) if k not in (a, p)]
        imp = [q**beta for q in negs]
        reweight = sum(i * q for i, q in zip(imp, negs)) / (sum(imp) / len(imp))
        ng = max((-tau_plus * n * pos + reweight) / (1 - tau_plus), n * math.exp(-1 / tau))
        out.append(-math.log(pos / (pos + ng)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("tau,tau_plus,beta", [(10.0, 0.1, 1.0), (0.5, 0.1, 1.0), (0.2, 0.05, 0.5), (0.5, 0.0, 0.0)])
def test_hard_negative_loss_matches_the_equations(tau, tau_plus, beta):
    z1, z2 = embeddings()
    torch.testing.assert_close(hard_negative_loss(z1, z2, tau, tau_plus, beta),
                               hard_loss_loop(z1, z2, tau, tau_plus, beta))


def test_hard_negative_clamp_is_active_for_large_tau_plus():
    z1, z2 = embeddings(b=4)
    z2 = z1.clone()  # perfect positives: pos = e^{1/tau}, tau+ N pos dominates the reweighted negatives
    tau = 0.5
    loss = hard_negative_loss(z1, z2, tau, tau_plus=0.9, beta=1.0)
    n = 6
    expected = torch.full((8,), math.log(math.exp(1 / tau) + n * math.exp(-1 / tau)) - 1 / tau, dtype=torch.float64)
    torch.testing.assert_close(loss, expected)


def test_info_nce_is_nt_xent_and_the_beta0_taup0_hard_loss():
    z1, z2 = embeddings(b=6, seed=3)
    tau = 0.1
    z = torch.cat([z1, z2])
    ref = []
    for a in range(12):
        p = (a + 6) % 12
        logits = torch.stack([z[a] @ z[k] / tau for k in range(12) if k != a])
        target = p if p < a else p - 1
        ref.append(-torch.log_softmax(logits, 0)[target])
    torch.testing.assert_close(info_nce_loss(z1, z2, tau), torch.stack(ref))
    torch.testing.assert_close(info_nce_loss(z1, z2, tau), hard_negative_loss(z1, z2, tau, 0.0, 0.0))


def test_losses_reject_a_single_sample():
    z1, z2 = embeddings(b=1)
    with pytest.raises(ValueError, match="at least 2"):
        hard_negative_loss(z1, z2)


def test_embedding_head_is_normalised_and_seeded():
    h1 = EmbeddingHead(10, 16, 4, generator=torch.Generator().manual_seed(1))
    h2 = EmbeddingHead(10, 16, 4, generator=torch.Generator().manual_seed(1))
    f = torch.randn(3, 10)
    out = h1(f)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out, h2(f))
    assert float(h1.fc1.weight.detach().abs().max()) <= 1 / math.sqrt(10)


def test_penultimate_features_from_forward_features_and_from_the_last_linear():
    class WithFF(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 3, 3)
            self.fc = nn.Linear(3, 2)

        def forward_features(self, x):
            return self.body(x).mean((2, 3))

        def forward(self, x):
            return self.fc(self.forward_features(x))

    x = torch.randn(2, 1, 5, 5)
    m = WithFF()
    torch.testing.assert_close(PenultimateFeatures(m)(x), m.forward_features(x))
    seq = nn.Sequential(nn.Flatten(), nn.Linear(25, 7), nn.ReLU(), nn.Linear(7, 3))
    torch.testing.assert_close(PenultimateFeatures(seq)(x), seq[:3](x))
    with pytest.raises(ValueError, match="forward_features"):
        PenultimateFeatures(nn.Conv2d(1, 1, 1))


def toy_denoiser():
    """Gaussian data N(0, 0.3^2 I) on 1x4x4 images: D(x, s) = 0.09 x / (0.09 + s^2)."""
    return CallableDenoiser(lambda x, s, y: 0.09 * x / (0.09 + s.to(x.dtype).view(-1, 1, 1, 1) ** 2),
                            in_channels=1, sample_size=4, sigma_min=0.01, sigma_max=10.0)


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, 6, dtype=torch.float64)

    def forward(self, img):
        return torch.tanh(self.proj(img.flatten(1) * 4 - 2))


def test_guidance_gradient_is_minus_the_loss_gradient_and_the_head_trains():
    D = toy_denoiser()
    enc = Flat()
    term = ContrastiveGuidance(enc, scale=3.0, loss="hard", tau=0.5, weighting="score")
    g = GuidedDenoiser(D, terms=[term])
    x_prev = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x_prev + 0.3 * torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    term.reset(4)
    first = g(x_prev, 2.0, None)
    torch.testing.assert_close(first, D(x_prev, torch.tensor(2.0, dtype=torch.float64)))  # only records positives
    assert term.head is None
    sigma = 1.5
    sd = torch.tensor(sigma, dtype=torch.float64)
    out_holder = {}

    def capture_head_then_run():
        # build the head as the term will (same seed) to compute the expected gradient independently
        feats_prev = enc(D(x_prev, torch.tensor(2.0, dtype=torch.float64)) * 0.5 + 0.5).float()
        head = EmbeddingHead(6, 128, 128, generator=torch.Generator().manual_seed(0))
        xr = x.clone().requires_grad_(True)
        feats = enc(D(xr, sd) * 0.5 + 0.5).float()
        loss = hard_negative_loss(head(feats), head(feats_prev), 0.5, 0.1, 1.0)
        (grad,) = torch.autograd.grad(loss.sum() / 2, xr)
        out_holder["expected"] = D(x, sd) - 3.0 * sigma**2 * grad
        out_holder["loss"] = float(loss.mean().detach())

    capture_head_then_run()
    out = g(x, sigma, None)
    torch.testing.assert_close(out, out_holder["expected"], rtol=1e-5, atol=1e-6)
    assert term.history == [pytest.approx(out_holder["loss"], rel=1e-5)]
    # one Adam step on the head lowered the loss on the same inputs
    fresh = EmbeddingHead(6, 128, 128, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(fresh.fc1.weight, term.head.fc1.weight)
    with torch.no_grad():
        f_now = enc(D(x, sd) * 0.5 + 0.5).float()
        f_prev = enc(D(x_prev, torch.tensor(2.0, dtype=torch.float64)) * 0.5 + 0.5).float()
        after = float(hard_negative_loss(term.head(f_now), term.head(f_prev), 0.5, 0.1, 1.0).mean())
    assert after < out_holder["loss"]


def pairwise_mean(f):
    d = torch.cdist(f, f)
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


@pytest.mark.parametrize("loss", ["hard", "infonce"])
def test_contrastive_sampling_spreads_samples_apart(loss):
    D = toy_denoiser()
    enc = Flat()
    seeds = list(range(8))
    plain = GuidedDiffusion(D, num_steps=8)(num_samples=8, seeds=seeds)
    sampler = ContrastiveGuidedSampler(D, enc, num_steps=8, contrastive_scale=2.0, contrastive_loss=loss,
                                       tau=0.5 if loss == "hard" else None, encoder_features="output")
    guided = sampler(num_samples=8, seeds=seeds)
    with torch.no_grad():
        assert pairwise_mean(enc(guided.double())) > 1.05 * pairwise_mean(enc(plain.double()))
    # the head restarts at every call: same seeds, same batch -> same samples
    torch.testing.assert_close(sampler(num_samples=8, seeds=seeds), guided)
    assert len(sampler.contrastive.history) == sampler.num_evals - 1


def test_window_persistent_head_and_errors():
    D = toy_denoiser()
    kw = dict(num_steps=6, solver="euler", encoder_features="output", tau=0.5)
    s = ContrastiveGuidedSampler(D, Flat(), contrastive_sigma_range=(0.5, 100.0), **kw)
    s(num_samples=3, seeds=[0, 1, 2])
    in_window = [x for x in s.sigmas()[:-1].tolist() if 0.5 <= x <= 100.0]
    assert len(s.contrastive.history) == len(in_window) - 1
    p = ContrastiveGuidedSampler(D, Flat(), persistent_head=True, **kw)
    a = p(num_samples=3, seeds=[0, 1, 2])
    b = p(num_samples=3, seeds=[0, 1, 2])
    assert not torch.allclose(a, b)  # the head kept training between calls
    with pytest.raises(ValueError, match="at least 2"):
        s(num_samples=1, seeds=[0])
    with pytest.raises(ValueError, match="loss"):
        ContrastiveGuidedSampler(D, Flat(), contrastive_loss="triplet")
    # default encoder: a classifier's penultimate features
    clf = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3))
    c = ContrastiveGuidedSampler(D, clf, num_steps=3)
    assert isinstance(c.contrastive.encoder, PenultimateFeatures)
    assert c(num_samples=2, seeds=[0, 1]).shape == (2, 1, 4, 4)
