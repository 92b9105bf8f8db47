"""robaug.diffusion.sampling: one function per solver behind a name -> function table, and the noise sources
(draws on the generator's device, robaug._core.rng's policy)."""

import math

import pytest
import torch

from robaug.diffusion import CallableDenoiser
from robaug.diffusion.samplers import SOLVERS, GuidedDiffusion
from robaug.diffusion.sampling import (
    SOLVER_FUNCTIONS,
    BatchNoise,
    SeedNoise,
    sample_ddim,
    sample_euler,
    sample_heun,
    sample_loop,
)


def gaussian_denoiser(mu=0.3, sd=0.5):
    """The exact denoiser of x0 ~ N(mu, sd^2): E[x0 | x] = mu + sd^2 / (sd^2 + sigma^2) (x - mu)."""
    def fn(x, sigma, labels):
        s = sigma.to(x.dtype).view(-1, 1, 1, 1)
        return mu + sd**2 / (sd**2 + s * s) * (x - mu)

    return fn


def exact_d(x, sigma, labels=None):
    return gaussian_denoiser()(x, torch.full((x.shape[0],), float(sigma), dtype=x.dtype), labels)


def test_table_names_the_built_in_solvers_and_sample_loop_dispatches_through_it():
    assert SOLVERS == ("heun", "euler", "ddim") and SOLVER_FUNCTIONS.names() == list(SOLVERS)
    assert SOLVER_FUNCTIONS["heun"] is sample_heun and SOLVER_FUNCTIONS["euler"] is sample_euler
    assert SOLVER_FUNCTIONS["ddim"] is sample_ddim
    with pytest.raises(KeyError, match="did you mean 'heun'"):
        SOLVER_FUNCTIONS["hune"]
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10
    sig = [10.0, 3.0, 1.0, 0.2, 0.0]
    for name in SOLVERS:
        assert torch.equal(sample_loop(exact_d, x, sig, solver=name), SOLVER_FUNCTIONS[name](exact_d, x, sig))


def test_a_registered_solver_is_usable_by_name(monkeypatch):
    calls = []

    def sample_x0(denoise, x, sigmas, *, class_labels=None, **kw):
        """One jump to the first denoised estimate."""
        calls.append(len(sigmas))
        return denoise(x, float(sigmas[0]), class_labels)

    monkeypatch.setitem(SOLVER_FUNCTIONS._items, "x0", sample_x0)
    D = CallableDenoiser(gaussian_denoiser(), in_channels=1, sample_size=4, sigma_min=0.01, sigma_max=10.0)
    s = GuidedDiffusion(D, num_steps=3, solver="x0", state_dtype=torch.float64)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    out = s.sample(num_samples=2, noise=noise)
    torch.testing.assert_close(out, exact_d(noise.double() * 10.0, 10.0))
    assert calls == [4]


def test_one_step_to_zero_is_the_denoised_estimate():
    """x_1 = x_0 + (0 - sigma_0) (x_0 - D) / sigma_0 = D for Euler, Heun (no correction at sigma = 0) and DDIM."""
    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    for fn in (sample_euler, sample_heun, sample_ddim):
        torch.testing.assert_close(fn(exact_d, x, [4.0, 0.0]), exact_d(x, 4.0), rtol=0, atol=1e-12)


def test_ddim_without_eta_is_the_euler_step_and_with_eta_adds_the_right_noise():
    x = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 8
    sig = [8.0, 2.0, 0.5, 0.0]
    torch.testing.assert_close(sample_ddim(exact_d, x, sig), sample_euler(exact_d, x, sig), rtol=1e-12, atol=1e-12)
    # one stochastic step by hand: sigma_up = eta s' sqrt(s^2 - s'^2) / s, sigma_down = sqrt(s'^2 - sigma_up^2)
    eta, s, s_next = 0.7, 8.0, 2.0
    out = sample_ddim(exact_d, x, [s, s_next, 0.0], eta=eta, noise=BatchNoise(torch.Generator().manual_seed(4), "cpu"))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).double()
    up = eta * s_next * math.sqrt(s * s - s_next * s_next) / s
    d = exact_d(x, s)
    x1 = d + math.sqrt(s_next**2 - up**2) * (x - d) / s + up * z
    torch.testing.assert_close(out, exact_d(x1, s_next), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(exact_d, x, sig, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        sample_loop(exact_d, x, sig, solver="heun", eta=0.5)


def test_callback_sees_every_step():
    seen = []
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    sample_heun(exact_d, x, [5.0, 1.0, 0.0], callback=seen.append)
    assert [(c["i"], c["sigma"], c["sigma_next"]) for c in seen] == [(0, 5.0, 1.0), (1, 1.0, 0.0)]
    assert all(set(c) == {"i", "sigma", "sigma_next", "x", "denoised"} for c in seen)


def test_seed_noise_is_per_sample_and_batch_noise_is_torch_randn():
    seeds = [5, 9, 2**40 + 3]
    n = SeedNoise(seeds, "cpu").randn((3, 2, 4), dtype=torch.float64)
    for i, s in enumerate(seeds):
        ref = torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
        assert torch.equal(n[i], ref.double())  # drawn in float32, then cast
    assert torch.equal(SeedNoise(seeds[1:], "cpu").randn((2, 2, 4)), n[1:].float())  # independent of the batch
    b = BatchNoise(torch.Generator().manual_seed(6), "cpu").randn((3, 5))
    assert torch.equal(b, torch.randn(3, 5, generator=torch.Generator().manual_seed(6)))
    with pytest.raises(TypeError, match="torch.Generator"):
        BatchNoise(6, "cpu")
    with pytest.raises(ValueError, match="seeds"):
        SeedNoise(seeds, "cpu").randn((2, 4))


def test_batch_noise_draws_on_the_generator_device_and_moves_the_result():
    """A CPU generator for a sampler on another device draws on the CPU (the target here is 'meta', which has no
    numbers: the draw happening at all on the CPU generator is what is checked)."""
    g = torch.Generator().manual_seed(7)
    out = BatchNoise(g, "meta").randn((2, 3))
    assert out.device.type == "meta" and out.shape == (2, 3)
    fresh = torch.Generator().manual_seed(7)
    torch.randn(2, 3, generator=fresh)
    assert torch.equal(g.get_state(), fresh.get_state())  # the CPU generator advanced by exactly that draw


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_gives_the_same_samples_on_cuda():
    D = CallableDenoiser(gaussian_denoiser(), in_channels=1, sample_size=4, sigma_min=0.01, sigma_max=10.0)
    cpu = GuidedDiffusion(D, num_steps=4, solver="ddim", eta=1.0).sample(num_samples=3,
                                                                       generator=torch.Generator().manual_seed(8))
    gpu = GuidedDiffusion(D.cuda(), num_steps=4, solver="ddim", eta=1.0).sample(
        num_samples=3, generator=torch.Generator().manual_seed(8))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)
