"""Every float setting of the samplers, the guidance terms and the Karras schedule is checked in the constructor:
NaN/inf (which would make every image NaN) and out-of-range values raise a ValueError naming the argument as the
caller spelled it; infinity is accepted where it means "no limit"."""

import math
import re

import pytest
import torch
from torch import nn

from robaug.diffusion import CallableDenoiser
from robaug.diffusion._checks import finite_float
from robaug.diffusion.contrastive import ContrastiveGuidance, ContrastiveGuidedSampler
from robaug.diffusion.guidance import ClassifierGuidance, GuidedDenoiser
from robaug.diffusion.samplers import GuidedDiffusion, sampling_sigmas
from robaug.diffusion.schedule import karras_sigmas

NAN, INF = math.nan, math.inf


def denoiser():
    return CallableDenoiser(lambda x, s, y=None: 0.5 * x, in_channels=1, sample_size=4, num_classes=3, null_label=3,
                            sigma_min=0.01, sigma_max=20.0)


def clf():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


GD_BAD = [
    (dict(cfg_scale=NAN), "cfg_scale"), (dict(cfg_scale=INF), "cfg_scale"), (dict(cfg_scale=-INF), "cfg_scale"),
    (dict(s_churn=NAN), "s_churn"), (dict(s_churn=INF), "s_churn"), (dict(s_churn=-1.0), "s_churn"),
    (dict(s_churn=10, s_noise=NAN), "s_noise"), (dict(s_noise=INF), "s_noise"), (dict(s_noise=-1.0), "s_noise"),
    (dict(s_tmin=NAN), "s_tmin"), (dict(s_tmin=INF), "s_tmin"), (dict(s_tmin=-1.0), "s_tmin"),
    (dict(s_tmax=NAN), "s_tmax"), (dict(s_tmax=-1.0), "s_tmax"), (dict(s_tmin=5.0, s_tmax=1.0), "s_tmin"),
    (dict(solver="ddim", eta=NAN), "eta"), (dict(solver="ddim", eta=INF), "eta"),
    (dict(solver="ddim", eta=-0.1), "eta"),
    (dict(eta=0.5), "eta"),
    (dict(rho=0), "rho"), (dict(rho=-7), "rho"), (dict(rho=NAN), "rho"), (dict(rho=INF), "rho"),
    (dict(sigma_min=NAN), "sigma_min"), (dict(sigma_min=0.0), "sigma_min"), (dict(sigma_max=INF), "sigma_max"),
    (dict(sigma_min=5.0, sigma_max=1.0), "sigma_min"), (dict(sigma_min=2.0, sigma_max=2.0), "sigma_min"),
    (dict(num_steps=0), "num_steps"),
    (dict(classifier=clf(), classifier_scale=NAN), "classifier_scale"),
    (dict(classifier=clf(), classifier_scale=INF), "classifier_scale"),
    (dict(classifier=clf(), classifier_mode="zz"), "classifier_mode"),
    (dict(classifier=clf(), classifier_weighting="zz"), "classifier_weighting"),
    (dict(classifier=clf(), classifier_sigma_range=(NAN, 1.0)), "classifier_sigma_range"),
    (dict(classifier=clf(), classifier_sigma_range=(2.0, 1.0)), "classifier_sigma_range"),
    (dict(image_size=0), "image_size"), (dict(discretization="log"), "discretization"),
]


@pytest.mark.parametrize("kwargs,name", GD_BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(GD_BAD)])
def test_guided_diffusion_names_every_bad_setting(kwargs, name):
    with pytest.raises(ValueError) as err:
        GuidedDiffusion(denoiser(), **kwargs)
    assert re.search(rf"\b{name}\b", str(err.value)), str(err.value)


def test_infinity_means_no_limit_where_documented():
    s = GuidedDiffusion(denoiser(), s_churn=5.0, s_tmax=INF, classifier=clf(), classifier_sigma_range=(0.5, INF))
    assert s.s_tmax == INF and s.terms[0].sigma_range == (0.5, INF)
    assert s.config()["s_tmax"] is None  # JSON has no inf


CG_BAD = [
    (dict(contrastive_scale=NAN), "contrastive_scale"), (dict(contrastive_scale=INF), "contrastive_scale"),
    (dict(contrastive_loss="ntxent"), "contrastive_loss"), (dict(tau=0), "tau"), (dict(tau=NAN), "tau"),
    (dict(tau_plus=1.0), "tau_plus"), (dict(tau_plus=NAN), "tau_plus"), (dict(tau_plus=-0.1), "tau_plus"),
    (dict(beta=NAN), "beta"), (dict(beta=-1.0), "beta"), (dict(head_lr=NAN), "head_lr"), (dict(head_lr=0.0), "head_lr"),
    (dict(contrastive_weighting="zz"), "contrastive_weighting"), (dict(contrastive_space="zz"), "contrastive_space"),
    (dict(contrastive_sigma_range=(0.0, NAN)), "contrastive_sigma_range"), (dict(embed_dim=0), "embed_dim"),
    (dict(cfg_scale=NAN), "cfg_scale"), (dict(encoder_features="logits"), "encoder_features"),
]


@pytest.mark.parametrize("kwargs,name", CG_BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(CG_BAD)])
def test_contrastive_sampler_names_every_bad_setting_as_its_own_argument(kwargs, name):
    with pytest.raises(ValueError) as err:
        ContrastiveGuidedSampler(denoiser(), clf(), **kwargs)
    assert re.search(rf"\b{name}\b", str(err.value)), str(err.value)


def test_terms_built_directly_use_their_own_argument_names():
    with pytest.raises(ValueError, match=r"^loss must"):
        ContrastiveGuidance(clf(), loss="ntxent")
    with pytest.raises(ValueError, match=r"^lr must"):
        ContrastiveGuidance(clf(), lr=NAN)
    with pytest.raises(ValueError, match=r"^mode must"):
        ClassifierGuidance(clf(), mode="zz")
    with pytest.raises(ValueError, match=r"^scale must"):
        ClassifierGuidance(clf(), scale=NAN)
    with pytest.raises(ValueError, match=r"^cfg_scale must"):
        GuidedDenoiser(denoiser(), cfg_scale=NAN)


@pytest.mark.parametrize("args,kwargs,name", [
    ((0, 0.002, 80.0), {}, "n"), ((10, 80.0, 0.002), {}, "sigma_min"), ((10, 0.0, 80.0), {}, "sigma_min"),
    ((10, NAN, 80.0), {}, "sigma_min"), ((10, 0.002, INF), {}, "sigma_max"), ((10, 0.002, 80.0), {"rho": 0}, "rho"),
    ((10, 0.002, 80.0), {"rho": NAN}, "rho"), ((10, 0.002, 80.0), {"rho": -1.0}, "rho"),
])
def test_karras_sigmas_validates_its_arguments(args, kwargs, name):
    with pytest.raises(ValueError) as err:
        karras_sigmas(*args, **kwargs)
    assert re.search(rf"\b{name}\b", str(err.value)), str(err.value)
    with pytest.raises(TypeError, match=r"\bn\b"):
        karras_sigmas(2.5, 0.002, 80.0)


def test_karras_sigmas_rho_one_is_a_uniform_grid():
    """eq. 5 with rho = 1 is linspace(sigma_max, sigma_min, n) -- a reference independent of the formula's code."""
    torch.testing.assert_close(karras_sigmas(5, 0.5, 4.5, rho=1.0, append_zero=False),
                               torch.linspace(4.5, 0.5, 5, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_sampling_sigmas_checks_explicit_bounds():
    with pytest.raises(ValueError, match="sigma_max"):
        sampling_sigmas(denoiser(), 4, sigma_max=NAN)
    with pytest.raises(ValueError, match="num_steps"):
        sampling_sigmas(denoiser(), 0)


def test_finite_float_helper():
    assert finite_float("x", 3) == 3.0 and finite_float("x", torch.tensor(2.5)) == 2.5
    assert finite_float("x", INF, allow_inf=True) == INF
    with pytest.raises(ValueError, match="no limit"):
        finite_float("x", NAN, allow_inf=True)
    with pytest.raises(TypeError, match="x must be a real number"):
        finite_float("x", "3")
    with pytest.raises(TypeError):
        finite_float("x", True)


@pytest.mark.parametrize("solver", ["heun", "euler", "ddim"])
@pytest.mark.parametrize("kwargs,name", [(dict(s_churn=NAN), "s_churn"), (dict(s_noise=NAN), "s_noise"),
                                         (dict(s_tmin=INF), "s_tmin"), (dict(s_tmax=NAN), "s_tmax")])
def test_the_solver_functions_check_their_settings_too(solver, kwargs, name):
    from robaug.diffusion.sampling import sample_loop

    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        sample_loop(lambda x, s, y: x * 0, x, [1.0, 0.0], solver=solver, **kwargs)
    if solver == "ddim":
        with pytest.raises(ValueError, match=r"^eta must"):
            sample_loop(lambda x, s, y: x * 0, x, [1.0, 0.0], solver=solver, eta=NAN)
