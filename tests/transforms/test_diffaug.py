import math
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from robaug.diffusion import CallableDenoiser, DiffusersDenoiser, schedule
from robaug.losses.diffaug import diffaug_cross_entropy, diffaug_loss
from robaug.transforms.diffaug import DiffAug, DiffAugEnsemble, diffuse_and_denoise

TABLE = schedule.default_timestep_sigmas()


def probe(in_channels=1, size_multiple=1, log=None):
    """A denoiser whose output encodes sigma: out = (x0_hat + 1) / 2 = sigma / 200 (before any crop/average)."""

    def fn(x, sigma, labels):
        if log is not None:
            log.append(tuple(x.shape))
        return (sigma.float() / 100 - 1).view(-1, 1, 1, 1).expand_as(x).clone()

    return CallableDenoiser(fn, in_channels=in_channels, size_multiple=size_multiple)


def decode_t(out):
    """Per-sample timestep from a probe output (B, C, H, W) in [0, 1]."""
    sigma = out.flatten(1)[:, 0].double() * 200
    return schedule.sigma_to_t(sigma, TABLE, "nearest")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def test_matches_manual_ddpm_forward_and_one_step_estimate(unet):
    """DiffAug == paper's steps 1-5 written with diffusers' add_noise and the epsilon x0 formula."""
    sched = DDPMScheduler(clip_sample=False)
    aug = DiffAug(DiffusersDenoiser(unet, sched), generator=torch.Generator().manual_seed(5))
    x = torch.rand(6, 3, 16, 16)
    out = aug(x)
    g = torch.Generator().manual_seed(5)  # documented draw order: t, then noise
    t = torch.randint(0, 1000, (6,), generator=g)
    n = torch.randn(6, 3, 16, 16, generator=g)
    x_t = sched.add_noise(2 * x - 1, n, t)
    with torch.no_grad():
        eps = unet(x_t, t).sample
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    ref = (((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1) + 1) / 2
    assert len(set(t.tolist())) == 6
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-4)


def test_same_seed_same_output_and_different_seed_differs(unet):
    d = DiffusersDenoiser(unet, {})
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    a = DiffAug(d, generator=torch.Generator().manual_seed(1))(x)
    b = DiffAug(d, generator=torch.Generator().manual_seed(1))(x)
    c = DiffAug(d, generator=torch.Generator().manual_seed(2))(x)
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    g1 = DiffAug(d)(x)
    torch.manual_seed(3)
    assert torch.equal(g1, DiffAug(d)(x))  # global RNG path


def test_per_sample_timesteps_are_uniform_over_t_range():
    aug = DiffAug(probe(), t_range=(10, 20), generator=torch.Generator().manual_seed(0))
    x = torch.full((4000, 1, 2, 2), 0.5)  # identical images
    t = decode_t(aug(x))
    assert t.min() == 10 and t.max() == 19
    counts = torch.bincount(t - 10, minlength=10)
    assert counts.min() > 300 and counts.max() < 500  # expected 400 each
    t_full = decode_t(DiffAug(probe(), generator=torch.Generator().manual_seed(1))(x[:64]))
    assert len(set(t_full.tolist())) > 50  # a batch of identical images gets different t


def test_fixed_t_mode_and_per_sample_p():
    x = torch.full((8, 1, 4, 4), 0.5)
    assert decode_t(DiffAug(probe(), t=321)(x)).tolist() == [321] * 8
    img = torch.randint(0, 256, (1000, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(DiffAug(probe(), p=0.0)(img), img)
    out = DiffAug(probe(), p=0.3, t_range=(500, 501), generator=torch.Generator().manual_seed(0))(img)
    changed = (out != img).flatten(1).any(dim=1)
    assert 250 < int(changed.sum()) < 350
    unchanged = ~changed
    assert torch.equal(out[unchanged], img[unchanged])
    sig500 = float(TABLE[500])
    assert torch.allclose(out[changed].float(), torch.tensor(round(sig500 / 200 * 255)).float())


def test_p_below_one_applies_the_same_draws_as_p_one(unet):
    d = DiffusersDenoiser(unet, {})
    x = torch.rand(12, 3, 16, 16)
    full = DiffAug(d, generator=torch.Generator().manual_seed(4))(x)
    # p < 1 draws the coins after t: a reference with the same stream reproduces the selected samples
    g = torch.Generator().manual_seed(4)
    t = torch.randint(0, 1000, (12,), generator=g)
    keep = torch.rand(12, generator=g) >= 0.5
    noise = torch.randn(12, 3, 16, 16, generator=g)
    part = DiffAug(d, p=0.5, generator=torch.Generator().manual_seed(4))(x)
    ref = diffuse_and_denoise(x, d, d.sigma_at(t), noise=noise).detach()
    assert torch.equal(part[keep], x[keep])
    torch.testing.assert_close(part[~keep], ref[~keep])
    assert full.shape == part.shape


def test_input_types_and_passthrough():
    aug = DiffAug(probe(in_channels=3), t=100)
    pil = PIL.Image.new("RGB", (9, 7), (10, 200, 30))
    out = aug(pil)
    assert isinstance(out, PIL.Image.Image) and out.mode == "RGB" and out.size == (9, 7)
    chw = torch.randint(0, 256, (3, 7, 9), dtype=torch.uint8)
    assert aug(chw).shape == (3, 7, 9) and aug(chw).dtype == torch.uint8
    img = tv_tensors.Image(torch.rand(2, 3, 7, 9, dtype=torch.float64))
    out = aug(img)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float64
    lead = torch.rand(2, 2, 3, 5, 5)
    assert aug(lead).shape == lead.shape
    # labels, masks and boxes pass through untouched
    mask = tv_tensors.Mask(torch.ones(7, 9, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[1, 1, 4, 4]], format="XYXY", canvas_size=(7, 9))
    out_img, label, out_mask, out_boxes = aug(tv_tensors.Image(chw), 3, mask, boxes)
    assert label == 3 and out_mask is mask and out_boxes is boxes
    assert not torch.equal(out_img, chw)
    x, y = aug(torch.rand(3, 7, 9), torch.tensor(5))
    assert y.item() == 5
    pipeline = v2.Compose([v2.PILToTensor(), DiffAug(probe(in_channels=1), t=5), v2.ToDtype(torch.float32, scale=True)])
    assert pipeline(PIL.Image.new("L", (6, 6))).shape == (1, 6, 6)


def test_padding_to_model_multiple_and_crop_back():
    log = []
    aug = DiffAug(probe(in_channels=1, size_multiple=8, log=log), t=10)
    out = aug(torch.rand(2, 1, 30, 21))
    assert out.shape == (2, 1, 30, 21) and log[-1] == (2, 1, 32, 24)
    tiny = aug(torch.rand(1, 1, 3, 3))  # reflect padding impossible (pad >= size): replicate
    assert tiny.shape == (1, 1, 3, 3) and log[-1] == (1, 1, 8, 8)


def test_padding_keeps_unet_results_in_the_interior(unet):
    d = DiffusersDenoiser(unet, {})
    x = torch.rand(2, 3, 15, 15)
    out = diffuse_and_denoise(x, d, d.sigma_at(torch.tensor([100, 600])), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    xp = F.pad(2 * x - 1, (0, 1, 0, 1), mode="reflect")
    s = d.sigma_at(torch.tensor([100, 600]))
    noisy = xp + s.float().view(-1, 1, 1, 1) * torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        ref = (d(noisy, s).clamp(-1, 1)[..., :15, :15] + 1) / 2
    torch.testing.assert_close(out.detach(), ref)


def test_grayscale_image_with_rgb_model_and_reverse_rejected():
    log = []

    def fn(x, sigma, labels):
        log.append(x.shape)
        # different value per channel: the result must be their mean
        return torch.stack([torch.full_like(x[:, 0], v) for v in (-0.6, 0.0, 0.3)], dim=1)

    aug = DiffAug(CallableDenoiser(fn, in_channels=3), t=50)
    out = aug(torch.rand(2, 1, 5, 5))
    assert log[-1][1] == 3 and out.shape == (2, 1, 5, 5)
    torch.testing.assert_close(out, torch.full_like(out, (-0.1 + 1) / 2))
    with pytest.raises(ValueError, match="Grayscale"):
        DiffAug(probe(in_channels=1), t=5)(torch.rand(3, 5, 5))


def test_clear_errors():
    aug = DiffAug(probe())
    with pytest.raises(ValueError, match="NaN"):
        aug(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        aug(torch.zeros(0, 1, 4, 4))
    with pytest.raises(TypeError, match="dtype"):
        aug(torch.zeros(1, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aug(torch.full((1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="t_range"):
        DiffAug(probe(), t_range=(0, 1001))
    with pytest.raises(ValueError, match="t_range"):
        DiffAug(probe(), t_range=(5, 5))
    with pytest.raises(ValueError, match="p must"):
        DiffAug(probe(), p=1.5)
    with pytest.raises(ValueError, match="t must"):
        DiffAug(probe(), t=1000)
    with pytest.raises(ValueError, match="autocast_dtype"):
        DiffAug(probe(), autocast_dtype=torch.float64)
    with pytest.raises(TypeError, match="Denoiser"):
        DiffAug(nn.Identity())
    cond = CallableDenoiser(lambda x, s, y: x, num_classes=10)
    with pytest.raises(ValueError, match="null_label"):
        DiffAug(cond)
    on_meta = DiffusersDenoiser(
        UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=8,
                    down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), layers_per_block=1), {}
    ).to("meta")
    with pytest.raises(RuntimeError, match=r"\.to\("):
        DiffAug(on_meta)(torch.rand(1, 8, 8))


def test_module_behaviour_no_grad_micro_batch_autocast(unet):
    d = DiffusersDenoiser(unet, {})
    aug = DiffAug(d, generator=torch.Generator().manual_seed(0))
    assert any(k.startswith("denoiser.unet.") for k in aug.state_dict())
    assert not any("timestep_sigmas" in k for k in aug.state_dict())
    x = torch.rand(5, 3, 16, 16, requires_grad=True)
    out = aug(x)
    assert not out.requires_grad
    small = DiffAug(d, micro_batch=2, generator=torch.Generator().manual_seed(0))(x)
    torch.testing.assert_close(small, out, rtol=0, atol=2e-4)  # conv round-off depends on batch size
    bf16 = DiffAug(d, autocast_dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))(x)
    assert bf16.dtype == torch.float32 and (bf16 - out).abs().mean() < 0.05
    assert "t_range=(0, 1000)" in repr(aug)


def test_string_denoiser_goes_through_hub(monkeypatch):
    calls = []
    fake = types.ModuleType("robaug.hub")

    def load_denoiser(name, **kw):
        calls.append(name)
        return probe()

    fake.load_denoiser = load_denoiser
    monkeypatch.setitem(sys.modules, "robaug.hub", fake)
    aug = DiffAug("fmnist-ddpm", t=3)
    assert calls == ["fmnist-ddpm"] and aug(torch.rand(1, 4, 4)).shape == (1, 4, 4)


class Linear(nn.Module):
    def __init__(self, c=1, k=4, hw=4):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(c * hw * hw, k)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1)) * 3


def test_ensemble_equals_average_of_softmaxes():
    clf = Linear()
    d = probe()
    ens = DiffAugEnsemble(clf, d, timesteps=[0, 100, 400])
    x = torch.rand(5, 1, 4, 4)
    out = ens(x)
    views = [x] + [torch.full_like(x, float(TABLE[t]) / 200) for t in (100, 400)]
    probs = torch.stack([clf(v).softmax(1) for v in views]).mean(0)
    torch.testing.assert_close(out, probs.log())
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))
    # drop-in classifier: cross_entropy on the output is the NLL of the averaged probabilities
    y = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(F.cross_entropy(out, y), -probs[torch.arange(5), y].log().mean())
    torch.testing.assert_close(DiffAugEnsemble(clf, d, [0, 100, 400], return_probs=True)(x), probs)
    only_raw = DiffAugEnsemble(clf, d, timesteps=[0])(x)
    torch.testing.assert_close(only_raw, clf(x).log_softmax(1))
    clf.calls = 0
    chunked = DiffAugEnsemble(clf, d, timesteps=[0, 100, 400], micro_batch=2)(x)
    torch.testing.assert_close(chunked, out)
    assert clf.calls == 3 * 3  # 3 chunks x 3 views
    with pytest.raises(ValueError, match="timesteps"):
        DiffAugEnsemble(clf, d, timesteps=[0, 1000])


def test_ensemble_gradients(unet):
    clf = Linear(c=3, k=3, hw=16)
    d = DiffusersDenoiser(unet, {})
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    DiffAugEnsemble(clf, d, timesteps=[0, 50])(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # through the t=0 view
    x2 = x.detach().clone().requires_grad_(True)
    lp = DiffAugEnsemble(clf, d, timesteps=[50], differentiable=True)(x2)
    lp[:, 0].sum().backward()
    assert x2.grad.abs().sum() > 0  # through the denoiser
    x3 = x.detach().clone().requires_grad_(True)
    DiffAugEnsemble(clf, d, timesteps=[50])(x3).sum().backward()
    assert x3.grad is None  # denoiser under no_grad by default


def test_diffaug_loss_is_ce_clean_plus_ce_augmented_in_one_forward():
    clf = Linear(k=3)
    x = torch.rand(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 1])
    aug = DiffAug(probe(), t=200)
    clf.calls = 0
    loss, logits_clean = diffaug_loss(clf, x, y, aug, preprocess=lambda v: (v - 0.5) / 0.25)
    assert clf.calls == 1
    xa = aug(x)
    ref = F.cross_entropy(clf((x - 0.5) / 0.25), y) + F.cross_entropy(clf((xa - 0.5) / 0.25), y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(logits_clean, clf((x - 0.5) / 0.25))
    loss.backward()
    assert clf.fc.weight.grad is not None
    ls = diffaug_cross_entropy(clf(x), clf(xa), y, label_smoothing=0.1)
    assert ls.item() > 0


@pytest.mark.slow
def test_builtin_fmnist_denoiser_denoises_real_images():
    from robaug.data import load_fashion_mnist
    from robaug.hub import load_denoiser

    torch.set_num_threads(1)
    d = load_denoiser("fmnist-ddpm")
    images, labels = load_fashion_mnist(train=False)
    x = images[:32].float() / 255
    x0 = 2 * x - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (50, 150, 300):
            s = float(d.sigma_at(torch.tensor(t)))
            noisy = x0 + s * torch.randn(x0.shape, generator=g)
            den = d(noisy, s).clamp(-1, 1)
            mse_den = (den - x0).pow(2).mean().item()
            # a trained denoiser beats the noisy input and the best constant (the data mean) by a wide margin
            assert mse_den < 0.5 * min(s * s, x0.var().item()), (t, mse_den)
            cond = d(noisy, s, labels[:32]).clamp(-1, 1)
            assert (cond - x0).pow(2).mean().item() <= 1.1 * mse_den  # the right label does not hurt
    out = DiffAug(d, t_range=(0, 200), generator=torch.Generator().manual_seed(0))((x * 255).round().to(torch.uint8))
    psnr = 10 * math.log10(1 / (out.float() / 255 - x).pow(2).mean().item())
    assert psnr > 20  # DiffAug at t < 200 keeps the image recognisable (24 dB after 600 training steps)


# --------------------------------------------------------------------------------------------------
# issue 13: a frozen denoiser stays in eval mode, short reprs, inputs that are not images, settings


class DropoutNet(nn.Module):
    """D(x_noisy) = dropout(x_noisy): with dropout off, the identity network."""

    def __init__(self, p=0.5):
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x, sigma, labels=None):
        return self.drop(x)


def test_frozen_denoiser_stays_in_eval_mode_when_the_module_is_put_in_train():
    net = DropoutNet().train()
    aug = DiffAug(CallableDenoiser(net), t=20, generator=torch.Generator().manual_seed(0))
    assert not net.training  # frozen at construction
    holder = nn.Sequential(aug).train()  # e.g. the augmentation inside a model put in train mode
    assert aug.training and not aug.denoiser.training and not net.drop.training
    x = torch.rand(4, 3, 8, 8)
    out = aug(x)
    ref = DiffAug(CallableDenoiser(lambda x, s, y=None: x), t=20, generator=torch.Generator().manual_seed(0))(x)
    assert torch.equal(out, ref)  # dropout off: exactly the identity network's result
    holder.eval()
    assert not aug.training and not net.training

    ens = DiffAugEnsemble(Linear(c=3, k=4, hw=8), CallableDenoiser(DropoutNet()), timesteps=[0, 20],
                          generator=torch.Generator().manual_seed(0)).train()  # fmt: skip
    assert ens.classifier.training and not ens.denoiser.training and not any(m.training for m in ens.denoiser.modules())
    ens_ref = DiffAugEnsemble(ens.classifier, CallableDenoiser(lambda x, s, y=None: x), timesteps=[0, 20],
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(ens(x), ens_ref(x))


def test_repr_is_short(unet):
    d = DiffusersDenoiser(unet, {})
    aug = DiffAug(d, t_range=(10, 500), p=0.5)
    nparams = sum(p.numel() for p in unet.parameters())
    text = repr(aug)
    assert len(text.splitlines()) <= 2 and len(text) < 200, text
    assert text.startswith("DiffAug(denoiser=(DiffusersDenoiser, ") and "t_range=(10, 500)" in text and "p=0.5" in text
    assert f"{nparams / 1e3:.1f}K parameters" in text
    assert "t=7" in repr(DiffAug(d, t=7)) and "micro_batch=4" in repr(DiffAug(d, micro_batch=4))
    composed = repr(v2.Compose([v2.RandomHorizontalFlip(), aug]))
    assert len(composed.splitlines()) <= 5, composed
    ens = repr(DiffAugEnsemble(Linear(c=3, k=4, hw=16), d))
    assert len(ens.splitlines()) == 1 and "timesteps=[0, 50, ..., 450] (10 views)" in ens and "Linear (" in ens


def test_string_denoiser_name_in_repr(monkeypatch):
    fake = types.ModuleType("robaug.hub")
    fake.load_denoiser = lambda name, **kw: probe()
    monkeypatch.setitem(sys.modules, "robaug.hub", fake)
    text = repr(DiffAug("fmnist-ddpm", t=3))
    assert text.startswith("DiffAug(denoiser='fmnist-ddpm' (CallableDenoiser, 0 parameters")


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: np.zeros((1, 8, 8), np.float32), r"numpy\.ndarray of shape \(1, 8, 8\).*torch\.from_numpy"),
        (lambda: (np.zeros((8, 8, 1), np.uint8), 3), r"tuple \(numpy\.ndarray"),
        (lambda: [0.5] * 10, r"list of 10 floats"),
    ],
    ids=["numpy", "numpy-label", "list"],
)
def test_inputs_that_are_not_images_raise(bad, match):
    with pytest.raises(TypeError, match="DiffAug input: got " + match):
        DiffAug(probe())(bad())
    with pytest.raises(TypeError, match="DiffAugEnsemble input: got " + match):
        DiffAugEnsemble(Linear(), probe())(bad())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(p=float("nan")), ValueError, "DiffAug: p must be a finite number"),
        (dict(p=float("inf")), ValueError, "DiffAug: p must be a finite number"),
        (dict(t_range=(0, float("nan"))), ValueError, "DiffAug: t_range must be a whole number"),
        (dict(t_range=(0,)), ValueError, r"DiffAug: t_range must be a pair"),
        (dict(t_range=5), ValueError, r"DiffAug: t_range must be a pair"),
        (dict(t=2.5), ValueError, "DiffAug: t must be a whole number"),
        (dict(micro_batch=0), ValueError, "DiffAug: micro_batch must be >= 1"),
        (dict(micro_batch=float("inf")), ValueError, "DiffAug: micro_batch must be a whole number"),
    ],
)
def test_settings_are_checked_naming_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DiffAug(probe(), **kwargs)


def test_ensemble_settings_are_checked_naming_the_argument():
    with pytest.raises(ValueError, match="DiffAugEnsemble: timesteps must be a whole number"):
        DiffAugEnsemble(Linear(), probe(), timesteps=[0, float("nan")])
    with pytest.raises(ValueError, match="DiffAugEnsemble: timesteps must be a sequence"):
        DiffAugEnsemble(Linear(), probe(), timesteps=50)
    with pytest.raises(TypeError, match="DiffAugEnsemble: generator"):
        DiffAugEnsemble(Linear(), probe(), generator=0)
    with pytest.raises(TypeError, match="DiffAugEnsemble: classifier"):
        DiffAugEnsemble("resnet18", probe())
