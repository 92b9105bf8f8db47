"""robaug's ADM networks against guided-diffusion's own code (PyPI ``guided-diffusion-sdk``, a test dependency).

Same random state dict in both, loaded strictly; outputs must agree to 1e-5. The DDPM posterior step through
robaug's ``D`` must agree with the reference diffusion's ``p_mean_variance``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from robaug.diffusion import ADMDenoiser, NoisyClassifier
from robaug.diffusion.guidance import ClassifierGuidance, GuidedDenoiser
from robaug.diffusion.nets.adm import EncoderUNetModel, UNetModel

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    ref_unet = pytest.importorskip("guided_diffusion.unet")
    gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")

TOL = 1e-5

UNET_CONFIGS = {
    # unconditional, learned sigma, attention at two resolutions, scale-shift norm, resblock up/down, head width
    "uncond_learned_sigma": dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
                                 attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
                                 use_scale_shift_norm=True, resblock_updown=True),
    # class-conditional, additive embedding, conv resampling, fixed head count, different upsampling heads
    "cond_legacy_heads": dict(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=2,
                              attention_resolutions=(1, 2), channel_mult=(1, 2), num_classes=7, num_heads=2,
                              num_heads_upsample=4, dropout=0.1),
    # new attention order (64x64 model), class-conditional, learned sigma, channel_mult[0] != 1 (512x512 style)
    "cond_new_order": dict(image_size=16, in_channels=3, model_channels=64, out_channels=6, num_res_blocks=1,
                           attention_resolutions=(2, 4), channel_mult=(0.5, 1, 1), num_classes=5,
                           num_head_channels=16, use_new_attention_order=True, use_scale_shift_norm=True,
                           resblock_updown=True, conv_resample=False),
}

CLASSIFIER_CONFIGS = {
    "attention_pool": dict(image_size=16, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=1,
                           attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
                           use_scale_shift_norm=True, resblock_updown=True, pool="attention"),
    "adaptive": dict(image_size=16, in_channels=3, model_channels=32, out_channels=4, num_res_blocks=1,
                     attention_resolutions=(2,), channel_mult=(1, 2), num_heads=2, pool="adaptive"),
    "spatial_v2": dict(image_size=8, in_channels=3, model_channels=32, out_channels=4, num_res_blocks=1,
                       attention_resolutions=(), channel_mult=(1, 1), pool="spatial_v2"),
}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (the reference zero-initialises output convolutions, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def _pair(ref_cls, our_cls, kwargs, seed=0):
    ref = ref_cls(**kwargs).eval()
    _randomise(ref, seed)
    ours = our_cls(**kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_unet_matches_guided_diffusion(name):
    kwargs = UNET_CONFIGS[name]
    ref, ours = _pair(ref_unet.UNetModel, UNetModel, kwargs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=g)
    t = torch.tensor([0.0, 731.25])  # fractional timesteps too
    y = torch.tensor([1, kwargs["num_classes"] - 1]) if kwargs.get("num_classes") else None
    with torch.no_grad():
        want = ref(x, t, y=y)
        got = ours(x, t, y=y)
    assert got.shape == (2, kwargs["out_channels"], 16, 16)
    assert want.abs().max() > 0.1  # the comparison is not between two near-zero maps
    assert (got - want).abs().max().item() <= TOL


def test_attention_order_matters():
    """The two attention orders are different computations: loading a legacy state dict into a
    new-order model must change the output (so the parity test above can fail)."""
    kwargs = dict(UNET_CONFIGS["uncond_learned_sigma"])
    ref, _ = _pair(ref_unet.UNetModel, UNetModel, kwargs)
    other = UNetModel(**{**kwargs, "use_new_attention_order": True}).eval()
    other.load_state_dict(ref.state_dict(), strict=True)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500.0])
    with torch.no_grad():
        assert (other(x, t) - ref(x, t)).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(CLASSIFIER_CONFIGS))
def test_classifier_matches_guided_diffusion(name):
    kwargs = CLASSIFIER_CONFIGS[name]
    ref, ours = _pair(ref_unet.EncoderUNetModel, EncoderUNetModel, kwargs, seed=3)
    s = kwargs["image_size"]
    x = torch.randn(3, 3, s, s, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([5.0, 250.0, 999.0])
    with torch.no_grad():
        want, got = ref(x, t), ours(x, t)
    assert got.shape == (3, kwargs["out_channels"])
    assert want.abs().max() > 0.1
    assert (got - want).abs().max().item() <= TOL


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="dims"):
        UNetModel(16, 3, 32, 3, 1, (), dims=1)
    with pytest.raises(ValueError, match="pool"):
        EncoderUNetModel(16, 3, 32, 4, 1, (), pool="max")
    m = UNetModel(16, 3, 32, 3, 1, (), channel_mult=(1,), num_classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        m(torch.randn(1, 3, 16, 16), torch.tensor([1.0]))


def _reference_diffusion(schedule="linear"):
    return gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule(schedule, 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
        rescale_timesteps=False,
    )


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_posterior_step_matches_p_mean_variance(schedule):
    """x0_hat = D(x, sigma_t) with x = x_t * sqrt(1 + sigma_t^2) is the reference's pred_xstart, and the DDPM
    posterior mean (Ho et al. 2020, eq. 7) built from it and robaug's schedule is the reference's mean."""
    kwargs = UNET_CONFIGS["cond_new_order"]
    ref, ours = _pair(ref_unet.UNetModel, UNetModel, kwargs, seed=5)
    cfg = {"beta_schedule": "linear" if schedule == "linear" else "squaredcos_cap_v2", "betas_dtype": "float64"}
    D = ADMDenoiser(ours, cfg)
    diffusion = _reference_diffusion(schedule)  # float64 tables, float32 network (its embedding is float32)
    g = torch.Generator().manual_seed(7)
    x_t = torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([1, 400, 999])
    y = torch.tensor([0, 3, 4])
    with torch.no_grad():
        out = diffusion.p_mean_variance(ref, x_t, t, clip_denoised=False, model_kwargs={"y": y})
        sig = D.timestep_sigmas[t]
        s = sig.view(-1, 1, 1, 1)
        x0 = D((x_t.double() * (1 + s * s).sqrt()).float(), sig.float(), y).double()
    # float32 network and arithmetic: x0 = x_t / sqrt(abar) - ... is ~150 x_t at t = 999, so compare relatively
    assert (x0 - out["pred_xstart"]).abs().max().item() <= TOL * out["pred_xstart"].abs().max().item()
    abar = 1.0 / (1.0 + D.timestep_sigmas**2)
    a_t, a_prev = abar[t].view(-1, 1, 1, 1), abar[t - 1].view(-1, 1, 1, 1)
    beta = 1.0 - a_t / a_prev
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (a_t / a_prev).sqrt() * (1 - a_prev) / (1 - a_t) * x_t.double()
    assert (mean - out["mean"]).abs().max().item() <= TOL * out["mean"].abs().max().item()
    # robaug's float64 schedule is guided-diffusion's: same abar table to float64 precision
    assert torch.allclose(abar, torch.from_numpy(diffusion.alphas_cumprod), rtol=1e-12, atol=0)


def test_noisy_classifier_guidance_is_dhariwal_nichol():
    """GuidedDenoiser(ADMDenoiser, ClassifierGuidance(NoisyClassifier)) is the reference's classifier-guided
    epsilon, eps~ = eps - sqrt(1 - abar_t) * grad_{x_t} log p(y | x_t, t) (Dhariwal & Nichol, Alg. 2)."""
    ref, ours = _pair(ref_unet.UNetModel, UNetModel, UNET_CONFIGS["uncond_learned_sigma"], seed=8)
    ref_clf, clf = _pair(ref_unet.EncoderUNetModel, EncoderUNetModel, CLASSIFIER_CONFIGS["attention_pool"], seed=9)
    SCALE = 1000.0  # random-weight classifier: small gradients
    D = ADMDenoiser(ours)
    term = ClassifierGuidance(NoisyClassifier(clf), scale=SCALE)
    assert term.space == "xt"  # taken from NoisyClassifier.guidance_space
    guided = GuidedDenoiser(D, terms=[term])
    t = 300
    sigma = float(D.timestep_sigmas[t])
    abar = 1.0 / (1.0 + sigma**2)
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([2, 9])
    ts = torch.full((2,), t)
    xr = x_t.clone().requires_grad_(True)
    logp = torch.log_softmax(ref_clf(xr, ts), dim=1)[torch.arange(2), y].sum()
    (grad,) = torch.autograd.grad(logp, xr)
    with torch.no_grad():
        eps = ref(x_t, ts)[:, :3]
    eps_guided = eps - (1 - abar) ** 0.5 * SCALE * grad
    x = x_t.double() * (1 + sigma**2) ** 0.5  # the sampler state is float64; the networks run in float32
    d = guided(x, sigma, y)
    assert (SCALE * grad.abs().max() * (1 - abar) ** 0.5) > 1e-2  # the guidance term is not negligible
    assert ((x - d) / sigma - eps_guided).abs().max().item() <= TOL * eps_guided.abs().max().item()


def test_half_precision_paths():
    """``convert_to_fp16`` (the reference's half-precision trunk) and a bfloat16 copy of the whole denoiser
    stay close to float32; the schedule table stays float64 and D returns the input's dtype."""
    kwargs = UNET_CONFIGS["uncond_learned_sigma"]
    ref, ours = _pair(ref_unet.UNetModel, UNetModel, kwargs, seed=12)
    D = ADMDenoiser(ours)
    x, s = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        want = D(x, s)
        half = UNetModel(**kwargs).eval()
        half.load_state_dict(ref.state_dict())
        half.convert_to_fp16()
        assert half.trunk_dtype == torch.float16 and half.time_embed[0].weight.dtype == torch.float32
        got16 = ADMDenoiser(half)(x, s)
        bf = ADMDenoiser(UNetModel(**kwargs).eval())
        bf.net.load_state_dict(ref.state_dict())
        bf = bf.to(torch.bfloat16)
        gotbf = bf(x, s)
    assert bf.timestep_sigmas.dtype == torch.float64
    assert got16.dtype == gotbf.dtype == torch.float32
    scale = want.abs().max()
    assert (got16 - want).abs().max() / scale < 1e-2
    assert (gotbf - want).abs().max() / scale < 5e-2
    assert (got16 - want).abs().max() > 0  # the fp16 path really ran in half precision
