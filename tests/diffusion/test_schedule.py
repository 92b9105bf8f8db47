import math

import pytest
import torch
from diffusers import DDPMScheduler

from robaug.diffusion import schedule

SCHEDULES = [
    ("linear", 1e-4, 0.02),
    ("scaled_linear", 0.00085, 0.012),
    ("squaredcos_cap_v2", 1e-4, 0.02),
]


@pytest.mark.parametrize("name,start,end", SCHEDULES)
def test_betas_and_alphas_cumprod_match_diffusers_exactly(name, start, end):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=start, beta_end=end)
    betas = schedule.make_betas(name, 1000, start, end)
    assert betas.dtype == torch.float32
    assert torch.equal(betas, ref.betas)
    assert torch.equal(schedule.alphas_cumprod_from_betas(betas), ref.alphas_cumprod)


@pytest.mark.parametrize("name,start,end", SCHEDULES)
def test_sigmas_from_config_equal_ve_formula(name, start, end):
    ref = DDPMScheduler(beta_schedule=name, beta_start=start, beta_end=end, num_train_timesteps=200)
    a = ref.alphas_cumprod.double()
    expected = torch.sqrt((1 - a) / a)
    for cfg in (ref, ref.config, dict(ref.config)):
        sig = schedule.sigmas_from_scheduler_config(cfg)
        assert sig.dtype == torch.float64 and sig.shape == (200,)
        torch.testing.assert_close(sig, expected, rtol=1e-12, atol=0)
    assert bool((sig[1:] > sig[:-1]).all())
    torch.testing.assert_close(schedule.alphas_cumprod_from_sigmas(sig), a, rtol=1e-12, atol=1e-15)


def test_trained_betas_and_rejections():
    betas = [0.1, 0.2, 0.3]
    sig = schedule.sigmas_from_scheduler_config({"trained_betas": betas})
    abar = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float32), 0).double()
    torch.testing.assert_close(sig, ((1 - abar) / abar).sqrt())
    with pytest.raises(ValueError, match="zero terminal SNR"):
        schedule.sigmas_from_scheduler_config({"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="unsupported beta_schedule"):
        schedule.make_betas("sigmoid")
    with pytest.raises(TypeError, match="scheduler_config"):
        schedule.scheduler_config_dict(42)


def test_default_table_is_ddpm_linear_and_reproduces_paper_certification_timesteps():
    sig = schedule.default_timestep_sigmas()
    ref = DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod.double()
    torch.testing.assert_close(sig, ((1 - ref) / ref).sqrt())
    # DiffAug paper (denoised smoothing): t* = min{t : sigma_t >= 2 sigma} = 145, 259, 396 for sigma = .25, .5, 1.
    for s, t_star in [(0.25, 145), (0.5, 259), (1.0, 396)]:
        assert int((sig >= 2 * s).nonzero()[0]) == t_star


def test_the_default_ddpm_config_is_one_readonly_definition_diffusers_accepts():
    cfg = schedule.ddpm_scheduler_config()
    assert cfg == dict(schedule.DDPM_SCHEDULER_CONFIG) and cfg is not schedule.DDPM_SCHEDULER_CONFIG
    with pytest.raises(TypeError):
        schedule.DDPM_SCHEDULER_CONFIG["beta_end"] = 0.03  # read-only: callers copy it
    cfg["beta_end"] = 0.03
    assert schedule.DDPM_SCHEDULER_CONFIG["beta_end"] == 0.02
    hub = schedule.ddpm_scheduler_config(variance_type="fixed_small", clip_sample=True)
    assert hub["clip_sample"] is True and hub["num_train_timesteps"] == 1000
    ref = DDPMScheduler.from_config(schedule.ddpm_scheduler_config())
    assert ref.config.prediction_type == "epsilon"
    a = ref.alphas_cumprod.double()
    assert torch.equal(schedule.default_timestep_sigmas(), schedule.sigmas_from_scheduler_config(hub))
    torch.testing.assert_close(schedule.default_timestep_sigmas(), ((1 - a) / a).sqrt(), rtol=0, atol=0)


def test_sigma_to_t_interpolates_in_log_sigma_and_clamps():
    sig = schedule.default_timestep_sigmas()
    t = schedule.sigma_to_t(sig, sig)
    torch.testing.assert_close(t, torch.arange(1000, dtype=torch.float64), rtol=0, atol=1e-9)
    assert torch.equal(schedule.sigma_to_t(sig, sig, "nearest"), torch.arange(1000))
    # geometric mean of two neighbours = half-way in log sigma
    mid = (sig[:-1] * sig[1:]).sqrt()
    torch.testing.assert_close(schedule.sigma_to_t(mid, sig), torch.arange(999, dtype=torch.float64) + 0.5)
    # nearest: a value just above table[10] maps to 10
    assert int(schedule.sigma_to_t(sig[10] * 1.0001, sig, "nearest")) == 10
    # outside the table: clamp; 0-d input stays 0-d
    out = schedule.sigma_to_t(torch.tensor(1e-5), sig)
    assert out.ndim == 0 and float(out) == 0.0
    assert float(schedule.sigma_to_t(torch.tensor(1e6), sig)) == 999.0
    # t_to_sigma is the inverse on fractional t and a lookup on integer t
    tf = torch.tensor([0.0, 3.25, 500.5, 998.9], dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma_to_t(schedule.t_to_sigma(tf, sig), sig), tf)
    assert torch.equal(schedule.t_to_sigma(torch.tensor([7, 9]), sig), sig[[7, 9]])
    with pytest.raises(ValueError, match="mode"):
        schedule.sigma_to_t(sig, sig, "linear")


def test_karras_sigmas_match_edm_formula():
    n, lo, hi, rho = 6, 0.002, 80.0, 7.0
    got = schedule.karras_sigmas(n, lo, hi, rho)
    expected = [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)
    ] + [0.0]
    assert got.dtype == torch.float64 and got.shape == (n + 1,)
    for g, e in zip(got.tolist(), expected):
        assert math.isclose(g, e, rel_tol=1e-12, abs_tol=1e-15)
    assert math.isclose(got[0].item(), hi) and math.isclose(got[n - 1].item(), lo)
    assert schedule.karras_sigmas(n, lo, hi, append_zero=False).shape == (n,)
    assert schedule.karras_sigmas(3, 0.1, 1.0, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError):
        schedule.karras_sigmas(0, lo, hi)
    with pytest.raises(ValueError):
        schedule.karras_sigmas(4, 1.0, 0.5)
