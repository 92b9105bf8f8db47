"""The adapters: a diffusers UNet2DModel (one-step x0 equals diffusers' DDPMScheduler) and an EDM network (Table 1
preconditioning) seen as D(x, sigma, class_labels)."""

import math

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from robaug.diffusion import CallableDenoiser, DiffusersDenoiser, EDMDenoiser, schedule

SCHEDULES = [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 1e-4, 0.02)]
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
TIMESTEPS = [0, 1, 137, 500, 998, 999]


def tiny_unet(in_ch=3, out_ch=None, num_class_embeds=None, seed=0):
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=in_ch, out_channels=out_ch or in_ch, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, num_class_embeds=num_class_embeds,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def tol(sigma):
    # float32 round-off of x0 = x - sigma * eps grows with sigma (|x| ~ sigma); a wrong formula or timestep
    # gives errors of order 0.1-1.
    return 1e-5 + 4e-6 * sigma


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("name,start,end", SCHEDULES)
@torch.no_grad()
def test_one_step_x0_matches_diffusers_ddpm_scheduler(unet, name, start, end, prediction):
    sched = DDPMScheduler(beta_schedule=name, beta_start=start, beta_end=end,
                          prediction_type=prediction, clip_sample=False)
    d = DiffusersDenoiser(unet, sched.config)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    n = torch.randn(3, 3, 16, 16, generator=g)
    prev = None
    for t in TIMESTEPS:
        tt = torch.full((3,), t)
        x_t = sched.add_noise(x0, n, tt)
        ref = sched.step(unet(x_t, tt).sample, t, x_t).pred_original_sample
        sigma = d.sigma_at(tt)
        ours = d(x0 + sigma.float().view(-1, 1, 1, 1) * n, sigma)
        s = float(sigma[0])
        err = (ours - ref).abs().max().item()
        assert err < tol(s), (t, s)
        if prev is not None and t == prev[0] + 1:  # the comparison can tell neighbouring timesteps apart
            assert (ours - prev[1]).abs().max().item() > max(100 * err, 1e-3)
        prev = (t, ours)


@torch.no_grad()
def test_class_conditional_unet_and_null_label():
    unet = tiny_unet(num_class_embeds=5, seed=3)
    sched = DDPMScheduler(clip_sample=False)
    d = DiffusersDenoiser(unet, sched, null_label=4)
    assert (d.num_classes, d.null_label, d.in_channels, d.sample_size, d.size_multiple) == (4, 4, 3, 16, 2)
    x0, n = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    t = torch.tensor([300, 700])
    labels = torch.tensor([1, 3])
    x_t = sched.add_noise(x0, n, t)
    ref = sched.step(unet(x_t, t, class_labels=labels).sample, 300, x_t).pred_original_sample
    sigma = d.sigma_at(t)
    x = x0 + sigma.float().view(-1, 1, 1, 1) * n
    # step() uses one timestep; compare the sample that was at t=300 (index 0)
    out = d(x, sigma, labels)
    assert (out[0] - ref[0]).abs().max() < tol(float(sigma[0]))
    assert (out - d(x, sigma, torch.tensor([1, 2]))).abs().amax(dim=(1, 2, 3))[1] > 1e-3  # labels matter
    torch.testing.assert_close(d(x, sigma), d(x, sigma, torch.tensor([4, 4])))  # None -> null label
    torch.testing.assert_close(d(x, sigma, 3), d(x, sigma, torch.tensor([3, 3])))  # int broadcasts
    assert DiffusersDenoiser(unet, sched).num_classes == 5  # no null label: all embeddings are classes
    with pytest.raises(ValueError, match="null label"):
        DiffusersDenoiser(unet, sched)(x, sigma)
    with pytest.raises(ValueError, match="entries"):
        d(x, sigma, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="outside"):
        DiffusersDenoiser(unet, sched, null_label=5)


@torch.no_grad()
def test_unconditional_rejects_labels_and_bad_inputs(unet):
    d = DiffusersDenoiser(unet, {"num_train_timesteps": 1000})
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="unconditional"):
        d(x, 1.0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="channels"):
        d(torch.randn(2, 1, 16, 16), 1.0)
    with pytest.raises(ValueError, match="multiple of 2"):
        d(torch.randn(2, 3, 15, 16), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        d(x, torch.ones(3))
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusersDenoiser(unet, {"prediction_type": "score"})
    with pytest.raises(TypeError, match="UNet2DModel"):
        DiffusersDenoiser(nn.Conv2d(3, 3, 1), {})


@torch.no_grad()
def test_sigma_forms_broadcast_the_same(unet):
    d = DiffusersDenoiser(unet, {})
    x = torch.randn(2, 3, 16, 16)
    s = float(d.sigma_at(torch.tensor(400)))
    ref = d(x, torch.tensor([s, s]))
    torch.testing.assert_close(d(x, s), ref)
    torch.testing.assert_close(d(x, torch.tensor(s)), ref)


@torch.no_grad()
def test_learned_variance_unet_uses_the_mean_half():
    unet = tiny_unet(out_ch=6, seed=5)
    sched = DDPMScheduler(variance_type="learned_range", clip_sample=False)
    d = DiffusersDenoiser(unet, sched)
    assert d.learned_variance
    x0, n, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16), torch.tensor([420, 420])
    x_t = sched.add_noise(x0, n, t)
    ref = sched.step(unet(x_t, t).sample, 420, x_t).pred_original_sample
    sigma = d.sigma_at(t)
    assert (d(x0 + sigma.float().view(-1, 1, 1, 1) * n, sigma) - ref).abs().max() < tol(float(sigma[0]))


@torch.no_grad()
def test_timestep_mapping_interpolated_and_nearest(unet):
    d = DiffusersDenoiser(unet, {})
    dn = DiffusersDenoiser(unet, {}, timestep_mode="nearest")
    table = d.timestep_sigmas
    mid = (table[100] * table[101]).sqrt()
    assert float(d.timesteps_for(mid.reshape(1))) == pytest.approx(100.5, abs=1e-4)
    assert dn.timesteps_for(mid.reshape(1) * 1.01).dtype == torch.int64
    assert int(dn.timesteps_for(table[100:101] * 1.001)) == 100
    # at a table sigma both modes feed the same timestep
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(d(x, table[250]), dn(x, table[250]))
    # round_sigma snaps to the table (discrete), identity for continuous models
    torch.testing.assert_close(d.round_sigma(table[10] * 1.001), table[10])
    c = CallableDenoiser(lambda x, s, y: x)
    assert float(c.round_sigma(0.1234)) == pytest.approx(0.1234)


def test_schedule_table_keeps_float64_and_is_not_in_state_dict(unet):
    d = DiffusersDenoiser(tiny_unet(seed=7), {})
    table = d.timestep_sigmas.clone()
    d.half()
    assert d.timestep_sigmas.dtype == torch.float64 and next(d.parameters()).dtype == torch.float16
    assert torch.equal(d.timestep_sigmas, table)
    d.to(torch.float32)
    assert torch.equal(d.timestep_sigmas, table)
    assert not any("timestep_sigmas" in k for k in d.state_dict())
    assert d.sigma_min == pytest.approx(float(table[0])) and d.sigma_max == pytest.approx(float(table[-1]))
    with pytest.raises(IndexError):
        d.sigma_at(torch.tensor([1000]))
    with pytest.raises(TypeError):
        d.sigma_at(torch.tensor([1.5]))


@torch.no_grad()
def test_half_precision_net_gets_half_input(unet):
    d = DiffusersDenoiser(tiny_unet(seed=8), {}).to(torch.bfloat16)
    out = d(torch.randn(2, 3, 16, 16), 2.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


class RecordingNet(nn.Module):
    """F(x, c_noise, labels): a fixed nonlinear function that records its inputs."""

    def __init__(self, in_channels=3):
        super().__init__()
        self.in_channels = in_channels
        self.w = nn.Parameter(torch.tensor(0.7))
        self.seen = []

    def forward(self, x, c_noise, labels=None):
        self.seen.append((x.clone(), c_noise.clone(), None if labels is None else labels.clone()))
        extra = 0.0 if labels is None else labels.float().reshape(len(x), -1).sum(dim=1).view(-1, 1, 1, 1)
        return torch.tanh(self.w * x) + c_noise.view(-1, 1, 1, 1) + extra


@torch.no_grad()
def test_edm_preconditioning_against_equations():
    net = RecordingNet()
    d = EDMDenoiser(net, sigma_data=0.5)
    assert (d.in_channels, d.sigma_min, d.sigma_max) == (3, 0.002, 80.0)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    sigmas = [0.002, 0.5, 80.0]
    out = d(x, torch.tensor(sigmas, dtype=torch.float64))
    for i, s in enumerate(sigmas):
        sd = 0.5
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / math.sqrt(s**2 + sd**2)
        c_in = 1 / math.sqrt(s**2 + sd**2)
        c_noise = math.log(s) / 4
        f = torch.tanh(0.7 * c_in * x[i]) + c_noise
        torch.testing.assert_close(out[i], c_skip * x[i] + c_out * f, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(net.seen[-1][0][i], c_in * x[i].float(), rtol=1e-6, atol=1e-6)
        assert net.seen[-1][1][i].item() == pytest.approx(c_noise, rel=1e-6)
    # at sigma = sigma_data: c_skip = 1/2, c_out = sd / sqrt(2)
    c = d.preconditioning(torch.tensor([0.5]))
    assert [float(v) for v in c[:3]] == pytest.approx([0.5, 0.5 / math.sqrt(2), 1 / (0.5 * math.sqrt(2))])
    # the default t table is DDPM-linear
    torch.testing.assert_close(d.timestep_sigmas, schedule.default_timestep_sigmas())


@torch.no_grad()
def test_edm_labels_onehot_and_index():
    net = RecordingNet()
    d = EDMDenoiser(net, num_classes=4, label_format="onehot")
    x = torch.randn(2, 3, 8, 8)
    d(x, 1.0)
    assert torch.equal(net.seen[-1][2], torch.zeros(2, 4))
    d(x, 1.0, torch.tensor([1, 3]))
    assert torch.equal(net.seen[-1][2], torch.eye(4)[[1, 3]])
    d_idx = EDMDenoiser(RecordingNet(), num_classes=4, null_label=0, in_channels=3)
    d_idx(x, 1.0)
    assert d_idx.net.seen[-1][2].tolist() == [0, 0]
    with pytest.raises(ValueError, match="in_channels"):
        EDMDenoiser(nn.Identity())
