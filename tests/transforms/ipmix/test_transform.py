"""IPMix: per-sample randomness, types, determinism, the JSD triple, presets, chain lengths, errors."""

from __future__ import annotations

import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from robaug.losses.jsd import JSDLoss
from robaug.transforms.fractals import MixingSet
from robaug.transforms.ipmix import IMAGE_OPS, IPMIX_PRESETS, IPMix
from robaug.transforms.ipmix import plan as ipmix_plan
from robaug.transforms.ipmix.plan import patch_pixels

MIX = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # small mixing set for speed


def make(**kw):
    kw.setdefault("mixing_set", MIX)
    return IPMix(**kw)


def _batch(b=8, c=3, h=32, w=32, seed=1):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# types, shapes, range


def test_uint8_and_float_batches_keep_type_and_range():
    x = _batch()
    y = make(generator=torch.Generator().manual_seed(0))(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    xf = x.float() / 255
    yf = make(generator=torch.Generator().manual_seed(0))(xf)
    assert yf.dtype == torch.float32 and yf.shape == x.shape
    assert yf.min() >= 0 and yf.max() <= 1
    assert (yf - xf).abs().mean() > 0.005  # it does something
    y64 = make()(xf.double())
    assert y64.dtype == torch.float64


def test_single_images_pil_and_tv_tensors():
    t = make()
    img = _batch(1)[0]
    assert t(img).shape == img.shape and t(img).dtype == torch.uint8
    for mode in ("RGB", "L"):
        pil = TF.to_pil_image(img if mode == "RGB" else img[:1])
        out = t(pil)
        assert isinstance(out, PIL.Image.Image) and out.mode == mode and out.size == pil.size
    tv = tv_tensors.Image(_batch(4))
    out = t(tv)
    assert isinstance(out, tv_tensors.Image) and out.shape == tv.shape
    lead = _batch(6).view(2, 3, 3, 32, 32)  # (..., C, H, W)
    assert t(lead).shape == lead.shape


def test_labels_pass_through():
    x, labels = _batch(), torch.arange(8)
    out, lab = make()(x, labels)
    assert lab is labels and out.shape == x.shape
    img, label = make()(TF.to_pil_image(x[0]), 3)
    assert label == 3 and isinstance(img, PIL.Image.Image)


def test_any_resolution_grayscale_and_channel_conversion_of_the_mixing_set():
    gray = _batch(4, c=1, h=28, w=28)
    assert make()(gray).shape == gray.shape  # RGB mixing set -> grey
    rgb_from_gray_set = IPMix(mixing_set=torch.rand(3, 1, 16, 16))(_batch(4, h=40, w=24))
    assert rgb_from_gray_set.shape == (4, 3, 40, 24)
    big = make(preset="imagenet")(_batch(2, h=96, w=80))
    assert big.shape == (2, 3, 96, 80)


# --------------------------------------------------------------------------------------------------
# randomness


def test_every_sample_gets_its_own_draw():
    x = _batch(1).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    y = make(generator=torch.Generator().manual_seed(0))(x).float()
    diff = (y.unsqueeze(0) - y.unsqueeze(1)).abs().flatten(2).mean(-1) + torch.eye(16) * 1e3
    assert (diff > 0.1).float().mean() > 0.9  # nearly every pair differs


def test_same_seed_same_output_and_global_rng():
    x = _batch()
    a = make(generator=torch.Generator().manual_seed(5))(x)
    b = make(generator=torch.Generator().manual_seed(5))(x)
    c = make(generator=torch.Generator().manual_seed(6))(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    d = make()(x)
    torch.manual_seed(11)
    assert torch.equal(d, make()(x))


def test_default_mixing_set_is_procedural_fractals():
    t = IPMix(mixing_set=MixingSet(num_images=32), generator=torch.Generator().manual_seed(0))
    assert t.mixing_set.kind == "fractals" and IPMix().mixing_set.kind == "fractals"
    assert t(_batch(4)).shape == (4, 3, 32, 32)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_image_level_chains_never_use_the_mixing_set():
    x = _batch()
    a = IPMix(mixing_set=torch.zeros(2, 3, 8, 8), chain_types=("image",), generator=_gen(3))(x)
    b = IPMix(mixing_set=torch.ones(2, 3, 8, 8), chain_types=("image",), generator=_gen(3))(x)
    assert torch.equal(a, b)
    c = IPMix(mixing_set=torch.zeros(2, 3, 8, 8), chain_types=("patch",), generator=_gen(3))(x)
    d = IPMix(mixing_set=torch.ones(2, 3, 8, 8), chain_types=("patch",), generator=_gen(3))(x)
    assert not torch.equal(c, d)


def test_zero_depth_returns_the_input():
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(make(depth=0)(x), x)


def test_dataloader_workers_give_different_augmentations():
    class Same(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return _batch(1)[0]

    class Aug(torch.utils.data.Dataset):
        def __init__(self):
            self.t = v2.Compose([v2.RandomHorizontalFlip(p=0.0), make()])
            self.base = Same()

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            return self.t(self.base[i]), torch.utils.data.get_worker_info().id

    loader = torch.utils.data.DataLoader(Aug(), batch_size=4, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    ids = [int(w[0]) for _, w in batches]
    assert sorted(ids) == [0, 1]  # one batch from each worker
    first = [b[0].float() for b, _ in batches]
    assert (first[0] - first[1]).abs().mean() > 1  # workers are seeded differently
    assert all((b[0].float() - b[1].float()).abs().mean() > 1 for b, _ in batches)


# --------------------------------------------------------------------------------------------------
# JSD views


def test_jsd_triple_for_a_single_image_and_a_batch(monkeypatch):
    calls = []
    original = ipmix_plan.pictures

    def spy(u, num_pics):
        calls.append(original(u, num_pics))
        return calls[-1]

    monkeypatch.setattr(ipmix_plan, "pictures", spy)
    img = _batch(1)[0]
    clean, v1, v2_ = make(num_views=2, generator=_gen(0))(img)
    # the clean image itself (no copy); a plain tensor's three images come back as tv_tensors.Image, see
    # test_jsd_views_of_a_plain_tensor_convert_together_in_a_v2_pipeline
    assert clean.data_ptr() == img.data_ptr() and torch.equal(clean, img) and v1.shape == v2_.shape == img.shape
    assert not torch.equal(v1, v2_)
    assert len(calls) == 1 and calls[0].shape == (1,)  # one picture, shared by both views

    x = _batch(8)
    out = make(num_views=2, generator=_gen(0))(x)
    assert out.shape == (24, 3, 32, 32)  # [clean | view1 | view2]
    assert torch.equal(out[:8], x)
    assert not torch.equal(out[8:16], out[16:])
    assert len(calls) == 2 and calls[1].shape == (8,)
    pil = TF.to_pil_image(img)
    triple = make(num_views=2)(pil)
    assert len(triple) == 3 and triple[0] is pil and all(isinstance(v, PIL.Image.Image) for v in triple)


def test_views_share_the_mixing_picture():
    # x = 1/2 everywhere; mixing pictures: 1/2 everywhere (every patch mix then returns ~1/2) or 0.
    # With a shared picture the two views of an image are unchanged together or (almost always) changed together.
    half = 128 / 255  # exactly representable in the uint8 mixing set
    pics = torch.stack([torch.full((3, 16, 16), half), torch.zeros(3, 16, 16)])
    t = IPMix(mixing_set=pics, num_views=2, chain_types=("patch",), patch_sizes=(1.0,), generator=_gen(0))
    out = t(torch.full((200, 3, 16, 16), half))
    changed1 = (out[200:400] - half).abs().flatten(1).amax(1) > 0.01  # same-picture mixes move x by < 0.002
    changed2 = (out[400:] - half).abs().flatten(1).amax(1) > 0.01
    assert 50 < changed1.sum() < 150  # both kinds of picture occur
    assert (changed1 != changed2).float().mean() < 0.15  # independent pictures would give ~0.45


def test_batch_output_is_what_jsd_losses_split():
    x, y = _batch(4), torch.tensor([0, 1, 2, 3])
    out = make(num_views=2)(x).float().div(255)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 5))
    loss = JSDLoss()(model(out), y)
    assert torch.isfinite(loss)
    loss.backward()


# --------------------------------------------------------------------------------------------------
# the official scalings, ops and mixes


def test_presets_and_overrides():
    t = make(preset="imagenet")
    assert (t.beta, t.severity, t.partner_aug_prob) == (4.0, 1.0, 0.5)
    assert patch_pixels(t.patch_sizes, 224, 224) == ([4, 8, 16, 32, 64, 224], [4, 8, 16, 32, 64, 224])
    c = make()
    assert (c.beta, c.severity, c.partner_aug_prob) == (3.0, 3.0, 0.0)
    assert patch_pixels(c.patch_sizes, 32, 32) == ([4, 8, 16, 32], [4, 8, 16, 32])
    assert make(preset="imagenet", beta=2.0, severity=3).beta == 2.0
    assert set(IPMIX_PRESETS) == {"cifar", "imagenet"}


@pytest.mark.parametrize("depth, idle", [(1, 1 / 2), (3, 1 / 4)])
def test_chain_length_is_uniform_from_zero_to_depth(depth, idle):
    # One chain of U{0..depth} patch steps mixing x = 1/2 with a black picture: x is unchanged when the chain
    # takes no step (probability 1 / (depth + 1)) and, rarely, when a random mask keeps every pixel.
    half = 128 / 255
    t = IPMix(mixing_set=torch.zeros(1, 1, 4, 4), width=1, depth=depth, chain_types=("patch",), patch_sizes=(1.0,),
              generator=_gen(1))  # fmt: skip
    y = t(torch.full((4000, 1, 4, 4), half))
    unchanged = ((y - half).abs().flatten(1).amax(1) < 1e-6).float().mean()
    assert idle - 0.01 < unchanged < idle + 0.05


# --------------------------------------------------------------------------------------------------
# errors


def test_bad_inputs_and_arguments_raise_clear_errors():
    t = make()
    with pytest.raises(ValueError, match="empty"):
        t(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        t(torch.full((2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        t(torch.full((2, 3, 8, 8), 3.0))
    with pytest.raises(ValueError, match="channels"):
        t(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        IPMix(mixing_set=torch.rand(4, 4, 8, 8))
    with pytest.raises(TypeError, match="Mask"):
        t(_batch(2), tv_tensors.Mask(torch.zeros(2, 32, 32)))
    for kwargs, match in [
        (dict(width=0), "width"),
        (dict(num_views=0), "num_views"),
        (dict(severity=0), "severity"),
        (dict(beta=0), "beta"),
        (dict(patch_sizes=(1.5,)), "patch_sizes"),
        (dict(patch_sizes=()), "patch_sizes"),
        (dict(chain_types=("pixel",)), "chain_types"),
        (dict(preset="svhn"), "preset"),
        (dict(partner_aug_prob=2.0), "partner_aug_prob"),
    ]:
        with pytest.raises(ValueError, match=match):
            make(**kwargs)
    with pytest.raises(TypeError, match="generator"):
        make(generator=0)


def test_module_behaviour():
    t = make(preset="imagenet", num_views=2)
    assert "preset=imagenet" in repr(t) and "num_views=2" in repr(t)
    assert t.state_dict() == {}
    assert len(IMAGE_OPS) == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch():  # pragma: no cover - no GPU on the development machines
    x = _batch().cuda()
    y = make(generator=torch.Generator("cuda").manual_seed(0))(x)
    assert y.device == x.device and y.dtype == torch.uint8


def test_inputs_are_never_modified():
    """The result is built in place only in IPMix's own float copy of uint8/PIL input, never in the caller's tensor."""
    xf = torch.rand(6, 3, 20, 20, generator=_gen(0))
    keep = xf.clone()
    t = make(preset="imagenet", generator=_gen(1))
    t(xf)
    t.augment(xf)
    make(num_views=2)(xf)
    assert torch.equal(xf, keep)
    x8 = _batch(6, h=20, w=20)
    keep8 = x8.clone()
    out = t(x8)
    assert torch.equal(x8, keep8) and not torch.equal(out, x8)


# --------------------------------------------------------------------------------------------------
# issue 13: v2 pipelines, autograd inputs, tiny images, torch.compile, settings


@pytest.mark.parametrize("kind", ["tensor", "image", "pil"])
def test_jsd_views_of_a_single_image_convert_together_in_a_v2_pipeline(kind):
    img = _batch(1)[0]
    inpt = {"tensor": img, "image": tv_tensors.Image(img), "pil": TF.to_pil_image(img)}[kind]
    pipeline = v2.Compose([make(num_views=2, generator=_gen(0)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    clean, v1, v2_ = pipeline(inpt)
    for out in (clean, v1, v2_):
        assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float32 and out.shape == img.shape
    torch.testing.assert_close(clean.as_subclass(torch.Tensor), img.float() / 255)  # the clean image, scaled
    assert not torch.equal(v1, v2_)
    # with a label, as datasets return it
    (c2, w1, w2), label = v2.Compose([make(num_views=2), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(
        (inpt, 3))
    assert label == 3 and {o.dtype for o in (c2, w1, w2)} == {torch.float32}


def test_the_views_of_a_plain_tensor_are_images_sharing_its_memory():
    img = _batch(1)[0]
    out = make(num_views=3, generator=_gen(0))(img)
    assert len(out) == 4 and all(type(o) is tv_tensors.Image and o.dtype == torch.uint8 for o in out)
    assert out[0].data_ptr() == img.data_ptr()
    batch = make(num_views=2)(_batch(2))  # a batch stays one plain tensor [x | view1 | view2]
    assert type(batch) is torch.Tensor and batch.shape == (6, 3, 32, 32)


def test_float_input_that_requires_grad_is_augmented_without_a_graph():
    x = (_batch(4).float() / 255).requires_grad_(True)
    y = make(generator=_gen(3))(x)
    ref = make(generator=_gen(3))(x.detach())
    assert not y.requires_grad and torch.equal(y, ref)
    views = make(num_views=2, generator=_gen(3)).augment(x)
    assert not views.requires_grad


def test_image_size_limits():
    for side in (2, 3):  # fractals are rendered at 4 px and resized down
        x = _batch(4, h=side, w=side)
        y = IPMix(generator=_gen(0), mixing_set=MixingSet(num_images=8))(x)
        assert y.shape == x.shape and y.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"IPMix: images of 1x5 pixels are too small; IPMix needs at least 2x2"):
        make()(torch.zeros(1, 3, 1, 5))
    with pytest.raises(ValueError, match="images of 1x1 pixels"):
        make().augment(torch.zeros(1, 3, 1, 1))


def test_fractals_below_4_px_are_the_4_px_fractals_resized():
    ms = MixingSet(num_images=3, seed=1)
    small = ms.images((3, 3), 3)
    four = MixingSet(num_images=3, seed=1).images((4, 4), 3).float() / 255
    ref = (TF.resize(four, [3, 3], antialias=True).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(small, ref)


def test_torch_compile_gives_the_eager_result():
    x = _batch(3, h=16, w=16)
    eager = make(num_views=2, generator=_gen(4))(x)
    compiled = torch.compile(make(num_views=2, generator=_gen(4)))
    assert torch.equal(compiled(x), eager)
    img = x[0]
    assert torch.equal(torch.compile(make(generator=_gen(4)))(img), make(generator=_gen(4))(img))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=float("nan")), "IPMix: beta must be a finite number"),
        (dict(beta=float("inf")), "IPMix: beta must be a finite number"),
        (dict(beta=-1.0), r"IPMix: beta must be > 0"),
        (dict(severity=float("nan")), "IPMix: severity must be a finite number"),
        (dict(partner_aug_prob=float("nan")), "IPMix: partner_aug_prob must be a finite number"),
        (dict(width=float("inf")), "IPMix: width must be a whole number"),
        (dict(depth=2.5), "IPMix: depth must be a whole number"),
        (dict(num_views=0), "IPMix: num_views must be >= 1"),
        (dict(patch_sizes=(float("nan"),)), "IPMix: patch_sizes"),
        (dict(patch_sizes=(0.5, 0)), "IPMix: patch_sizes"),
        (dict(patch_sizes=0.5), "IPMix: patch_sizes"),
    ],
)
def test_settings_are_checked_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
    with pytest.raises(TypeError, match="IPMix: beta must be a real number"):
        make(beta="3")


def test_repr_is_one_line():
    assert "\n" not in repr(make(num_views=2))
