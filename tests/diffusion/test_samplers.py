"""GuidedDiffusion's solvers against diffusers' schedulers, EDM's Algorithm 2 and the exact ODE solution."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, UNet2DModel
from torch import nn

from robaug.diffusion import CallableDenoiser, DiffusersDenoiser
from robaug.diffusion.samplers import GuidedDiffusion, sample_loop, sampling_sigmas, spaced_timesteps

SCHED = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
             prediction_type="epsilon")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=4,
    ).eval()


def gaussian_denoiser(mu=0.3, sd=0.5, **kw):
    """Exact D for data x0 ~ N(mu, sd^2 I): D(x, s) = (sd^2 x + s^2 mu) / (sd^2 + s^2)."""

    def fn(x, s, y):
        s = s.to(x.dtype).view(-1, 1, 1, 1)
        return (sd**2 * x + s**2 * mu) / (sd**2 + s**2)

    return CallableDenoiser(fn, in_channels=1, sample_size=4, sigma_min=0.002, sigma_max=80.0, **kw)


def mixture_denoiser():
    """Exact posterior mean for a class-conditional 2-component Gaussian mixture per pixel (nonlinear in x)."""
    means = torch.tensor([[-0.6, 0.5], [0.2, 0.8], [-0.1, 0.4]], dtype=torch.float64)  # 3 classes (last = null)
    sd = 0.2

    def fn(x, s, y):
        s2 = s.to(x.dtype).view(-1, 1, 1, 1) ** 2
        m = means.to(x.dtype)[y].view(-1, 2, 1, 1, 1)  # (B, 2, 1, 1, 1)
        logw = -((x.unsqueeze(1) - m) ** 2) / (2 * (sd**2 + s2.unsqueeze(1)))
        w = torch.softmax(logw, dim=1)
        post = (sd**2 * x.unsqueeze(1) + s2.unsqueeze(1) * m) / (sd**2 + s2.unsqueeze(1))
        return (w * post).sum(1)

    return CallableDenoiser(fn, in_channels=1, sample_size=4, num_classes=2, null_label=2, sigma_min=0.002,
                            sigma_max=80.0)


# ---------------------------------------------------------------------------------------------------------
# against diffusers


def test_ddim_matches_diffusers_ddim_scheduler(unet):
    n = 10
    sched = DDIMScheduler(**SCHED, clip_sample=False)
    sched.set_timesteps(n)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 1])
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=y).sample, t, x).prev_sample
    sampler = GuidedDiffusion(DiffusersDenoiser(unet, SCHED), num_steps=n, solver="ddim")
    sig = sampler.sigmas()
    # same timesteps: the DDIM grid walks diffusers' own "leading" timesteps
    table = sampler.denoiser.timestep_sigmas
    assert torch.equal(sig[:-1], table[sched.timesteps])
    # diffusers starts from x_T = n in the DDPM scale, i.e. x = n * sqrt(1 + sigma_T^2) in the VE view
    ours = sampler.sample(y, noise=noise.double() * math.sqrt(1 + sig[0] ** 2) / sig[0])
    torch.testing.assert_close(ours.float(), x, atol=2e-4, rtol=0)


def test_ddim_clip_sample_and_eta_match_diffusers(unet):
    n, eta = 8, 0.7
    sched = DDIMScheduler(**SCHED, clip_sample=True)
    sched.set_timesteps(n)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([3, 0])
    g = torch.Generator().manual_seed(5)  # the stochastic noise of steps 0..n-2, drawn in our order
    z = [torch.randn(2, 1, 8, 8, generator=g) for _ in range(n)]
    x = noise.clone()
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            x = sched.step(unet(x, t, class_labels=y).sample, t, x, eta=eta, variance_noise=z[i]).prev_sample
    sampler = GuidedDiffusion(DiffusersDenoiser(unet, SCHED), num_steps=n, solver="ddim", eta=eta, clip_denoised=True)
    sig = sampler.sigmas()
    ours = sampler.sample(y, noise=noise.double() * math.sqrt(1 + sig[0] ** 2) / sig[0],
                          generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours.float(), x, atol=2e-4, rtol=0)


def test_euler_karras_matches_diffusers_euler_scheduler(unet):
    n = 10
    sched = EulerDiscreteScheduler(**SCHED, use_karras_sigmas=True)
    sched.set_timesteps(n)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 1, 0])
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(sched.scale_model_input(x, t), t, class_labels=y).sample
            x = sched.step(eps, t, x).prev_sample
    # diffusers' Karras sigmas are not rounded to integer timesteps (fractional t goes into the UNet)
    sampler = GuidedDiffusion(DiffusersDenoiser(unet, SCHED), num_steps=n, solver="euler", round_sigmas=False)
    torch.testing.assert_close(sampler.sigmas().float(), sched.sigmas, rtol=1e-5, atol=0)
    ours = sampler.sample(y, noise=noise)
    torch.testing.assert_close(ours.float(), x, atol=1e-3, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_spaced_timesteps_equal_diffusers(spacing):
    for n in (1, 7, 18, 50):
        sched = DDIMScheduler(**SCHED, timestep_spacing=spacing)
        sched.set_timesteps(n)
        assert spaced_timesteps(1000, n, spacing).tolist() == sched.timesteps.tolist()


# ---------------------------------------------------------------------------------------------------------
# against EDM's Algorithm 2 and the exact solution


def edm_algorithm2(D, latents, seeds_noise, labels, sigmas, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al. 2022, Algorithm 2, written out from the paper (independent of robaug's loop)."""
    n = len(sigmas) - 1
    x = latents * sigmas[0]
    for i in range(n):
        t, t_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t <= s_tmax else 0.0
        t_hat = t + gamma * t
        eps = seeds_noise() if gamma > 0 else 0.0
        x_hat = x + math.sqrt(t_hat**2 - t**2) * s_noise * eps
        d = (x_hat - D(x_hat, t_hat, labels)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d
        if t_next != 0:
            d2 = (x_next - D(x_next, t_next, labels)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


@pytest.mark.parametrize("s_churn", [0.0, 30.0])
def test_heun_equals_edm_algorithm2(s_churn):
    D = mixture_denoiser()
    seeds = [11, 12, 13, 14]
    labels = torch.tensor([0, 1, 1, 0])
    kw = dict(s_churn=s_churn, s_tmin=0.05, s_tmax=20.0, s_noise=1.003)
    sampler = GuidedDiffusion(D, num_steps=12, solver="heun", **kw)
    ours = sampler.sample(labels, seeds=seeds)

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    draw = lambda: torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens]).double()  # noqa: E731
    latents = draw()
    sig = sampling_sigmas(D, 12)  # eq. 5 with sigma_N = 0
    assert sig[0] == 80.0 and abs(sig[-2] - 0.002) < 1e-12 and sig[-1] == 0.0
    ref = edm_algorithm2(lambda x, s, y: D(x, torch.tensor(s, dtype=torch.float64), y), latents, draw, labels,
                         sig.tolist(), kw["s_churn"], kw["s_tmin"], kw["s_tmax"], kw["s_noise"])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert sampler.num_evals == 2 * 12 - 1


def test_heun_is_second_order_and_euler_first_order_on_gaussian_data():
    mu, sd = 0.3, 0.5
    D = gaussian_denoiser(mu, sd)
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def err(solver, n):
        sampler = GuidedDiffusion(D, num_steps=n, solver=solver)
        smax = float(sampler.sigmas()[0])
        # probability-flow ODE for Gaussian data: x(s) - mu = (x(smax) - mu) sqrt(sd^2 + s^2) / sqrt(sd^2 + smax^2)
        exact = mu + (noise * smax - mu) * sd / math.sqrt(sd**2 + smax**2)
        return float((sampler.sample(noise=noise) - exact).abs().max())

    heun = [err("heun", n) for n in (20, 40)]
    euler = [err("euler", n) for n in (20, 40)]
    assert heun[0] / heun[1] > 3.5  # ~4: second order
    assert 1.7 < euler[0] / euler[1] < 2.3  # ~2: first order
    assert heun[1] < euler[1] / 5


# ---------------------------------------------------------------------------------------------------------
# seeds, grids, shapes, errors


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.emb = nn.Embedding(4, 1)

    def forward(self, x, s, y):
        s = s.to(x.dtype).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x / torch.sqrt(1 + s * s))) + 0.1 * self.emb(y).view(-1, 1, 1, 1)


def tiny_denoiser():
    return CallableDenoiser(TinyNet(), in_channels=1, sample_size=8, num_classes=3, null_label=3,
                            sigma_min=0.01, sigma_max=20.0)


@pytest.mark.parametrize("solver,kw", [("heun", {"s_churn": 10.0}), ("ddim", {"eta": 1.0}), ("euler", {})])
def test_per_sample_seeds_do_not_depend_on_batch(solver, kw):
    sampler = GuidedDiffusion(tiny_denoiser(), num_steps=6, solver=solver, cfg_scale=1.5, **kw)
    seeds = [3, 1, 4, 1_000_000_007, 5, 9]
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    full = sampler(labels, seeds=seeds)
    parts = torch.cat([sampler(labels[:2], seeds=seeds[:2]), sampler(labels[2:], seeds=seeds[2:])])
    torch.testing.assert_close(parts, full, atol=1e-6, rtol=0)
    rev = sampler(labels.flip(0), seeds=seeds[::-1]).flip(0)
    torch.testing.assert_close(rev, full, atol=1e-6, rtol=0)
    assert not torch.allclose(full[0], full[3])  # different seeds, different samples
    single = sampler(int(labels[3]), seeds=[seeds[3]])
    torch.testing.assert_close(single[0], full[3], atol=1e-6, rtol=0)


def test_generator_and_global_rng():
    sampler = GuidedDiffusion(tiny_denoiser(), num_steps=4, solver="euler")
    a = sampler(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(7))
    b = sampler(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = sampler(num_samples=2)  # unconditional via the null label, global RNG
    assert c.shape == (2, 1, 8, 8) and c.dtype == torch.float32 and 0 <= c.min() and c.max() <= 1


def test_karras_grid_is_rounded_to_the_model_timesteps(unet):
    D = DiffusersDenoiser(unet, SCHED)
    sig = GuidedDiffusion(D, num_steps=18).sigmas()
    table = D.timestep_sigmas
    assert sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    for s in sig[:-1]:
        assert torch.isclose(table, s, rtol=1e-12, atol=0).any()
    assert abs(sig[0] - table[-1]) < 1e-9 and abs(sig[-2] - table[0]) < 1e-9
    raw = sampling_sigmas(D, 18, round_sigmas=False)
    assert raw.shape == (19,) and not torch.equal(raw, sig)
    # explicit limits are clamped into the model's range, as in EDM
    s2 = sampling_sigmas(D, 5, sigma_min=1e-5, sigma_max=1e5, round_sigmas=False)
    assert abs(s2[0] - table[-1]) < 1e-9 and abs(s2[-2] - table[0]) < 1e-9


def test_bad_arguments_raise_clear_errors():
    D = tiny_denoiser()
    with pytest.raises(ValueError, match="solver"):
        GuidedDiffusion(D, solver="dpm")
    with pytest.raises(ValueError, match="eta"):
        GuidedDiffusion(D, solver="heun", eta=0.5)
    with pytest.raises(ValueError, match="null label"):
        GuidedDiffusion(gaussian_denoiser(), cfg_scale=2.0)
    with pytest.raises(TypeError, match="Denoiser"):
        GuidedDiffusion(lambda x, s: x)
    s = GuidedDiffusion(D, num_steps=3)
    with pytest.raises(ValueError, match="inconsistent"):
        s(torch.tensor([0, 1]), seeds=[1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        s(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="batch size"):
        s()
    with pytest.raises(ValueError, match="image_size"):
        GuidedDiffusion(CallableDenoiser(lambda x, s, y: x, in_channels=1), num_steps=2)(num_samples=1)
    with pytest.raises(ValueError, match="decreasing"):
        sample_loop(lambda x, s, y: x, torch.zeros(1, 1, 2, 2), [1.0, 2.0, 0.0])


def test_image_size_for_size_agnostic_denoiser_and_float32_state():
    D = CallableDenoiser(lambda x, s, y: x * 0.5, in_channels=3)
    s = GuidedDiffusion(D, num_steps=3, image_size=(6, 10), state_dtype=torch.float32)
    out = s.sample(num_samples=2, seeds=[0, 1])
    assert out.shape == (2, 3, 6, 10) and out.dtype == torch.float32


def test_repr_shows_the_settings_in_a_few_lines_not_the_network(unet):
    d = DiffusersDenoiser(unet, SCHED, num_classes=3, null_label=3)
    text = repr(GuidedDiffusion(d, num_steps=5, solver="heun", cfg_scale=1.5, s_churn=2.0))
    lines = text.splitlines()
    assert len(lines) <= 8 and len(repr(unet).splitlines()) > 30
    assert lines[0] == "GuidedDiffusion(" and "DiffusersDenoiser(" in lines[1] and "3 classes" in lines[1]
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    assert f"{params:.2f}M params" in lines[1]
    assert "solver='heun', num_steps=5 (9 evaluations)" in text and "cfg_scale=1.5" in text
    assert "s_churn=2" in text and "Conv2d" not in text
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    text = repr(GuidedDiffusion(d, num_steps=3, classifier=clf, classifier_scale=0.5))
    assert "guidance: ClassifierGuidance(scale=0.5" in text and "Linear" not in text


def test_progress_bar_writes_whole_lines_to_a_log_and_is_silent_when_quiet(capsys, monkeypatch):
    sampler = GuidedDiffusion(tiny_denoiser(), num_steps=6, solver="euler")
    monkeypatch.delenv("ROBAUG_QUIET", raising=False)
    sampler(torch.tensor([0, 1]), seeds=[0, 1], progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and 1 <= len(lines) <= 7 and all(line.startswith("sampling") for line in lines)
    assert "6/6" in lines[-1]
    monkeypatch.setenv("ROBAUG_QUIET", "1")
    sampler(torch.tensor([0, 1]), seeds=[0, 1], progress=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("solver,kw", [("heun", {"s_churn": 10.0}), ("ddim", {"eta": 1.0})])
def test_per_sample_noise_is_bit_identical_whatever_the_batch(solver, kw):
    """With an elementwise denoiser (no batch-size-dependent kernels) whole stochastic trajectories are bit-identical:
    the initial, churn and DDIM noise of sample i depend only on seeds[i] (docs/sampling.md: with a real network
    only the network's rounding differs)."""
    d = CallableDenoiser(lambda x, s, y=None: torch.tanh(x) * 0.7, in_channels=1, sample_size=4,
                         sigma_min=0.01, sigma_max=20.0)
    sampler = GuidedDiffusion(d, num_steps=5, solver=solver, **kw)
    seeds = [11, 22, 33, 44, 55]
    full = sampler(seeds=seeds)
    parts = torch.cat([sampler(seeds=seeds[:1]), sampler(seeds=seeds[1:4]), sampler(seeds=seeds[4:])])
    assert torch.equal(full, parts)
    assert not torch.equal(full[0], full[1])
