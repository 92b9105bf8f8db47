"""Tests for robaug.eval.corruptions: determinism, ranges, shapes, severity ordering, and comparisons with
independent references (the paper's formulas, PIL, torchvision, colorsys, numpy, naive loops)."""

from __future__ import annotations

import colorsys
import io
import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from robaug.eval import corruptions as C

NAMES = C.available_corruptions()


def _images(c: int, size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth structured images (a blurred random field plus a bright square) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x[..., size // 4: size // 2, size // 4: size // 2] = 0.9
    return x.clamp(0, 1)


def test_names_and_tables():
    # all 15 CIFAR-10-C corruptions in make_cifar_c.py's order, then the 4 extra ones
    reference_order = [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ]
    assert list(C.DEFAULT_CORRUPTIONS) == list(C.BENCHMARK_CORRUPTIONS) == reference_order
    assert NAMES == reference_order + ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert C.CORRUPTION_PARAMS["frost"] == ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
    assert C.CORRUPTION_PARAMS["spatter"][2] == (0.65, 0.3, 1, 0.69, 0.5, 0)
    assert C.CORRUPTION_PARAMS["spatter"][4] == (0.65, 0.1, 0.5, 0.68, 0.6, 1)
    for name in NAMES:
        assert len(C.CORRUPTION_PARAMS[name]) == 5
        assert C.CORRUPTION_FAMILIES[name] in {"noise", "blur", "weather", "digital"}
    # spot-check the CIFAR-10-C table
    assert C.CORRUPTION_PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert C.CORRUPTION_PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert C.CORRUPTION_PARAMS["motion_blur"][4] == (9, 2.5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_shape_range_determinism(name, channels, size):
    x = _images(channels, size)
    a = C.corrupt(x, name, 3, seed=1)
    b = C.corrupt(x, name, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, x), f"{name} left the images unchanged"


@pytest.mark.parametrize("name", [n for n in NAMES if n not in {"contrast", "brightness", "saturate", "pixelate",
                                                                "jpeg_compression", "zoom_blur", "gaussian_blur",
                                                                "defocus_blur"}])
def test_random_corruptions_depend_on_seed_and_differ_per_image(name):
    x = _images(3, 32, n=2)
    x = torch.cat([x[:1], x[:1]])  # two identical images
    a = C.corrupt(x, name, 5, seed=1)
    b = C.corrupt(x, name, 5, seed=2)
    assert not torch.equal(a, b)
    assert not torch.equal(a[0], a[1]), "randomness must be drawn per image"


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_and_uint8_and_single_image(name):
    x = (_images(3, 32, n=2) * 255).round().to(torch.uint8)
    out = C.corrupt(x, name, 2, seed=0)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    single = C.corrupt(x[0], name, 2, seed=0)
    assert single.shape == x[0].shape and single.dtype == torch.uint8


# Corruptions whose strength the reference table orders by severity (glass blur, elastic, saturate and snow
# trade one parameter against another across severities, so their ordering is not monotone by design;
# pixelate's box resampling aliases differently at each size, e.g. 23 vs 21 pixels at 28x28; frost lowers the
# image weight while the frost weight stays at 0.4 from severity 3 to 4, which moves a bright frost layer
# closer to the image; spatter is water at severities 1-3 and mud at 4-5, see the spatter tests).
MONOTONE = [
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur", "defocus_blur",
    "motion_blur", "zoom_blur", "fog", "brightness", "contrast", "jpeg_compression",
]


@pytest.mark.parametrize("name", MONOTONE)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_distance_from_clean_rises_with_severity(name, channels, size):
    x = _images(channels, size, n=16, seed=3)
    dist = [float((C.corrupt(x, name, s, seed=0) - x).abs().mean()) for s in range(1, 6)]
    assert all(d1 <= d2 + 1e-6 for d1, d2 in zip(dist, dist[1:])), dist
    assert dist[-1] > dist[0]


@pytest.mark.parametrize(
    "name", ["glass_blur", "elastic_transform", "snow", "saturate", "pixelate", "frost", "spatter"]
)
def test_non_monotone_corruptions_still_corrupt(name):
    x = _images(3, 32, n=8, seed=3)
    for s in range(1, 6):
        assert float((C.corrupt(x, name, s, seed=0) - x).abs().mean()) > 1e-3


# ---------------------------------------------------------------------------- references


def test_gaussian_noise_formula():
    x = _images(3, 32)
    out = C.corrupt(x, "gaussian_noise", 4, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = (x + 0.09 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(out, ref)


def test_speckle_noise_formula():
    x = _images(3, 32)
    out = C.corrupt(x, "speckle_noise", 5, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = (x + x * 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(out, ref)


def test_shot_noise_statistics():
    # Poisson(x c) / c: mean x and variance x / c (c = 50 at severity 5); away from the clip at 1.
    x = torch.full((64, 1, 32, 32), 0.3)
    out = C.corrupt(x, "shot_noise", 5, seed=0)
    assert abs(out.mean().item() - 0.3) < 0.005
    assert abs(out.var().item() - 0.3 / 50) < 0.0006
    assert torch.allclose(out * 50, (out * 50).round(), atol=1e-4)  # values are multiples of 1 / c


def test_impulse_noise_statistics():
    x = torch.full((64, 3, 32, 32), 0.5)
    out = C.corrupt(x, "impulse_noise", 5, seed=0)  # amount 0.07, salt vs pepper 0.5
    changed = out != 0.5
    assert abs(changed.float().mean().item() - 0.07) < 0.005
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}
    assert abs((out[changed] == 1).float().mean().item() - 0.5) < 0.03


def test_contrast_formula():
    x = _images(3, 32)
    means = x.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(C.corrupt(x, "contrast", 5), ((x - means) * 0.15 + means).clamp(0, 1))


def test_brightness_grey_is_clipped_shift_and_rgb_matches_colorsys():
    g = _images(1, 28)
    torch.testing.assert_close(C.corrupt(g, "brightness", 5), (g + 0.3).clamp(0, 1), atol=1e-6, rtol=0)
    x = _images(3, 8, n=1)
    out = C.corrupt(x, "brightness", 3)
    ref = torch.empty_like(x)
    for i in range(8):
        for j in range(8):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            ref[0, :, i, j] = torch.tensor(colorsys.hsv_to_rgb(h, s, min(v + 0.15, 1.0)))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_saturate_matches_colorsys():
    x = _images(3, 8, n=1)
    out = C.corrupt(x, "saturate", 5)  # s * 2.5 + 0.2
    ref = torch.empty_like(x)
    for i in range(8):
        for j in range(8):
            h, s, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            ref[0, :, i, j] = torch.tensor(colorsys.hsv_to_rgb(h, min(s * 2.5 + 0.2, 1.0), v))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_gaussian_blur_matches_torchvision_inside_the_border():
    x = _images(3, 32)
    for severity, sigma in enumerate((0.4, 0.6, 0.7, 0.8, 1.0), start=1):
        out = C.corrupt(x, "gaussian_blur", severity)
        radius = int(4 * sigma + 0.5)  # scikit-image / scipy kernel radius
        ref = TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
        r = radius
        torch.testing.assert_close(out[..., r:-r, r:-r], ref[..., r:-r, r:-r], atol=1e-5, rtol=0)


def test_gaussian_blur_scales_with_image_size():
    # at 64x64 the pixel sigma doubles: blurring a 2x upsampled image ~ upsampling the blurred image
    x = _images(1, 32)
    big = F.interpolate(x, scale_factor=2, mode="nearest")
    out_big = C.corrupt(big, "gaussian_blur", 5)
    assert (out_big - big).abs().mean() > (C.corrupt(x, "gaussian_blur", 5) - x).abs().mean() * 0.5
    small = C.corrupt(x, "gaussian_blur", 5)
    torch.testing.assert_close(F.avg_pool2d(out_big, 2), small, atol=0.05, rtol=0)


def test_padding_modes_match_numpy():
    a = torch.arange(5.0).view(1, 1, 1, 5)
    for mode, np_mode in (("nearest", "edge"), ("reflect", "symmetric"), ("mirror", "reflect")):
        ref = np.pad(np.arange(5.0), 3, mode=np_mode)
        assert C._pad(a, 0, 3, mode)[0, 0, 0].tolist() == ref.tolist(), mode
    # pads longer than the axis keep reflecting
    ref = np.pad(np.arange(3.0), 7, mode="symmetric")
    assert C._pad(torch.arange(3.0).view(1, 1, 1, 3), 0, 7, "reflect")[0, 0, 0].tolist() == ref.tolist()


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    # the reference's disk(): 17x17 grid for radius <= 8, normalised, then a 3x3 Gaussian with OpenCV's
    # default reflect-101 border (numpy "reflect")
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    d = ((X**2 + Y**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur**2))
    g /= g.sum()
    p = np.pad(d, 1, mode="reflect")
    rows = sum(g[i] * p[i: i + 17, :] for i in range(3))
    return sum(g[j] * rows[:, j: j + 17] for j in range(3))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_defocus_blur_matches_direct_convolution(severity):
    radius, alias = C.CORRUPTION_PARAMS["defocus_blur"][severity - 1]
    k = _reference_disk(radius, alias)
    x = _images(1, 32, n=1)
    out = C.corrupt(x, "defocus_blur", severity)
    xp = np.pad(x[0, 0].double().numpy(), 8, mode="reflect")  # cv2.filter2D default border
    ref = np.zeros((32, 32))
    for i in range(17):
        for j in range(17):
            ref += k[i, j] * xp[i: i + 32, j: j + 32]
    np.testing.assert_allclose(out[0, 0].numpy(), np.clip(ref, 0, 1), atol=1e-5)


def test_motion_blur_matches_naive_loop():
    x = _images(3, 12, n=2)
    radius, sigma = 6, 2
    angles = torch.tensor([30.0, -40.0])
    out = C._motion_blur_batch(x, radius, sigma, angles)
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    k /= k.sum()
    ref = np.zeros_like(x.numpy())
    for b, a in enumerate(angles.tolist()):
        for i in range(width):
            ox = math.ceil(i * math.cos(math.radians(a)) - 0.5)
            oy = math.ceil(i * math.sin(math.radians(a)) - 0.5)
            for yy in range(12):
                for xx in range(12):
                    ref[b, :, yy, xx] += k[i] * x[b, :, min(max(yy + oy, 0), 11), min(max(xx + ox, 0), 11)].numpy()
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("zoom", [1.0, 1.06, 1.13, 1.25, 2.25])
def test_clipped_zoom_matches_crop_and_corner_aligned_resize(zoom):
    # scipy.ndimage.zoom(order=1) uses a corner-aligned grid, i.e. bilinear with align_corners=True
    x = _images(3, 28, n=2)
    h = 28
    ch = math.ceil(h / zoom)
    top = (h - ch) // 2
    out_size = round(ch * zoom)
    crop = x[..., top: top + ch, top: top + ch]
    z = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=True)
    trim = (out_size - h) // 2
    ref = z[..., trim: trim + h, trim: trim + h]
    torch.testing.assert_close(C._clipped_zoom(x, zoom), ref, atol=1e-5, rtol=0)


def test_zoom_blur_uses_the_reference_factor_lists():
    # np.arange(1, 1.06, 0.01) has 7 entries (a float artefact of the reference), the others 11..25 + 1
    assert [len(C._zoom_factors(s)) for s in range(1, 6)] == [7, 12, 16, 21, 26]


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_pil_box(severity):
    x = (_images(3, 32) * 255).round().to(torch.uint8)
    out = C.corrupt(x, "pixelate", severity)
    c = C.CORRUPTION_PARAMS["pixelate"][severity - 1]
    for i in range(len(x)):
        pil = TF.to_pil_image(x[i])
        ref = pil.resize((int(32 * c),) * 2, PIL.Image.BOX).resize((32, 32), PIL.Image.BOX)
        ref = TF.pil_to_tensor(ref)
        # PIL rounds to uint8 between its passes: at most 1 level apart
        assert (out[i].int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pil(severity):
    x = (_images(3, 32) * 255).round().to(torch.uint8)
    out = C.corrupt(x, "jpeg_compression", severity)
    q = C.CORRUPTION_PARAMS["jpeg_compression"][severity - 1]
    for i in range(len(x)):
        buf = io.BytesIO()
        TF.to_pil_image(x[i]).save(buf, "JPEG", quality=q)
        ref = TF.pil_to_tensor(PIL.Image.open(buf))
        assert torch.equal(out[i], ref)  # PIL's libjpeg, same quality


def test_fog_plasma_and_formula():
    p = C._plasma_fractal(3, 32, 2.0, torch.zeros(1), torch.Generator().manual_seed(0))
    assert p.shape == (3, 32, 32)
    assert torch.allclose(p.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(p.flatten(1).max(1).values, torch.ones(3))
    assert not torch.equal(p[0], p[1])
    # fog = clip((x + c p[:H, :W]) * max(x) / (max(x) + c)), plasma on the next power of two (32 for 28x28)
    x = _images(1, 28)
    out = C.corrupt(x, "fog", 5, seed=0)  # c = 1.5, wibble decay 1.75
    p = C._plasma_fractal(len(x), 32, 1.75, x, torch.Generator().manual_seed(0))[:, None, :28, :28]
    m = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, ((x + 1.5 * p) * m / (m + 1.5)).clamp(0, 1))


def test_elastic_severity1_is_a_pure_affine_warp():
    # severity 1 has alpha = 0: only the random affine; a constant image stays constant
    x = torch.full((2, 3, 32, 32), 0.4)
    torch.testing.assert_close(C.corrupt(x, "elastic_transform", 1, seed=0), x)
    torch.testing.assert_close(C.corrupt(x, "elastic_transform", 5, seed=0), x)


@pytest.mark.parametrize("iterations", [1, 2])
def test_glass_shuffle_matches_the_reference_loop(iterations):
    # The reference statement, run literally on an (H, W, 3) numpy array with the same random offsets:
    # on numpy row views the tuple "swap" copies the neighbour into x[h, w].
    x = _images(3, 12, n=2)
    g = torch.Generator().manual_seed(4)
    out = C._glass_shuffle(x.clone(), 1, iterations, g)
    offs = torch.randint(-1, 1, (iterations, 10, 10, 2, 2), generator=torch.Generator().manual_seed(4))
    for b in range(2):
        ref = x[b].permute(1, 2, 0).numpy().copy()
        for it in range(iterations):
            for ih, h in enumerate(range(12 - 1, 1, -1)):
                for iw, w in enumerate(range(12 - 1, 1, -1)):
                    dx, dy = offs[it, ih, iw, :, b].tolist()
                    h_prime, w_prime = h + dy, w + dx
                    ref[h, w], ref[h_prime, w_prime] = ref[h_prime, w_prime], ref[h, w]
        np.testing.assert_array_equal(out[b].permute(1, 2, 0).numpy(), ref)
    # the parallel gather equals the sequential scan
    seq = C._glass_shuffle(x.clone(), 1, iterations, torch.Generator().manual_seed(4), sequential=True)
    torch.testing.assert_close(out, seq, rtol=0, atol=0)


def test_glass_shuffle_large_delta_runs_sequentially():
    x = _images(1, 10, n=2)
    out = C._glass_shuffle(x.clone(), 2, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    # every output value is some input value of the same image
    for b in range(2):
        assert torch.isin(out[b], x[b]).all()


# ---------------------------------------------------------------------------- inputs and errors


def test_pil_and_tv_tensor_inputs():
    pil = PIL.Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8), mode="L")
    out = C.gaussian_noise(pil, 3, seed=0)
    assert isinstance(out, PIL.Image.Image) and out.mode == "L" and out.size == (28, 28)
    img = tv_tensors.Image(_images(3, 32, n=1)[0])
    out = C.corrupt(img, "fog", 2, seed=0)
    assert isinstance(out, tv_tensors.Image)


def test_transform_passes_labels_through():
    t = C.Corrupt("motion_blur", 3, generator=torch.Generator().manual_seed(0))
    x = _images(3, 32, n=1)[0]
    out, label = t(x, 7)
    assert label == 7 and out.shape == x.shape and not torch.equal(out, x)


def test_errors():
    x = _images(3, 32)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.corrupt(x * 3, "fog", 1)
    with pytest.raises(ValueError, match="channels"):
        C.corrupt(torch.rand(2, 4, 8, 8), "fog", 1)


# ---------------------------------------------------------------------------- -C set construction


def test_make_corrupted_dataset_in_memory_and_npy(tmp_path):
    x = (_images(1, 28, n=10) * 255).round().to(torch.uint8)
    y = torch.arange(10)
    names = ["gaussian_noise", "contrast", "glass_blur"]
    mem = C.make_corrupted_dataset(x, y, names, severities=(1, 5), seed=3, batch_size=4)
    assert mem.corruptions == names and mem.severities == [1, 5]
    imgs = mem.images("gaussian_noise", 5)
    assert imgs.shape == (10, 1, 28, 28) and imgs.dtype == torch.uint8
    # deterministic, and independent of which other corruptions are built
    again = C.make_corrupted_dataset(x, y, ["gaussian_noise"], severities=(5,), seed=3, batch_size=4)
    assert torch.equal(again.images("gaussian_noise", 5), imgs)
    other = C.make_corrupted_dataset(x, y, ["gaussian_noise"], severities=(5,), seed=4, batch_size=4)
    assert not torch.equal(other.images("gaussian_noise", 5), imgs)
    # contrast is deterministic and equals corrupt()
    torch.testing.assert_close(mem.images("contrast", 1), C.corrupt(x, "contrast", 1))

    disk = C.make_corrupted_dataset(x, y, names, severities=(1, 5), seed=3, batch_size=4, out_dir=tmp_path)
    arr = np.load(tmp_path / "gaussian_noise.npy")
    assert arr.shape == (20, 28, 28, 1) and arr.dtype == np.uint8
    assert np.array_equal(np.load(tmp_path / "labels.npy"), np.tile(np.arange(10), 2))
    np.testing.assert_array_equal(arr[10:, ..., 0], imgs[:, 0].numpy())
    xb, yb = next(disk.batches("gaussian_noise", 5, batch_size=10))
    torch.testing.assert_close(xb, imgs.float() / 255)
    assert yb.tolist() == list(range(10))


# ---------------------------------------------------------------------------- frost

FROST_TABLE = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))


def _luma(y: torch.Tensor) -> torch.Tensor:
    return (y * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_frost_with_a_constant_photo_is_the_formula(severity):
    x = _images(3, 32, n=3)
    photo = torch.full((1, 3, 200, 300), 0.5)
    c0, c1 = FROST_TABLE[severity - 1]
    out = C.corrupt(x, "frost", severity, seed=0, frost_images=photo)
    torch.testing.assert_close(out, (c0 * x + c1 * 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_frost_with_a_photo_the_size_of_the_crop_after_resizing():
    # A 160x160 photo shrunk by 0.2 (OpenCV INTER_LINEAR: output pixel d samples (d + 0.5) * 5 - 0.5 = 5d + 2,
    # exactly a pixel centre) is 32x32, so the crop is the whole resized photo: photo[:, 2::5, 2::5].
    g = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (3, 160, 160), generator=g, dtype=torch.uint8)
    crop = photo[:, 2::5, 2::5].float() / 255
    x = _images(3, 32, n=4)
    out = C.frost(x, 5, seed=3, frost_images=photo)
    torch.testing.assert_close(out, (0.75 * x + 0.45 * crop).clamp(0, 1), atol=1e-6, rtol=0)
    # uint8 input, as make_cifar_c.py: np.uint8(clip(c0 * x + c1 * frost, 0, 255)) up to rounding vs truncation
    x8 = (x * 255).round().to(torch.uint8)
    out8 = C.frost(x8, 5, seed=3, frost_images=[photo])
    ref = (0.75 * x8.float() + 0.45 * photo[:, 2::5, 2::5].float()).clamp(0, 255)
    assert (out8.float() - ref).abs().max() <= 1
    # greyscale images: the RGB result converted with ITU-R 601 luma
    grey = _images(1, 32, n=4)
    out_g = C.frost(grey, 2, seed=0, frost_images=photo)
    torch.testing.assert_close(out_g, _luma((grey.expand(-1, 3, -1, -1) + 0.3 * crop).clamp(0, 1)), atol=1e-6, rtol=0)


def test_frost_crops_are_random_windows_of_random_photos():
    # photo 0 encodes its pixel position, photo 1 is constant 1: every crop must be a contiguous window of the
    # resized photo 0 starting in randint(0, h' - H) (the reference's range), or all ones.
    h, w = 40, 50  # after resizing by 0.2
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    small = torch.stack([rows / 255, cols / 255, torch.zeros(h, w)])
    big = small.repeat_interleave(5, 1).repeat_interleave(5, 2)  # shrinking by 0.2 samples 5d + 2: gives `small`
    photos = C.FrostImages([big, torch.ones(3, 200, 250)])
    assert torch.equal(photos.resized(0.2)[0], small)
    x = torch.zeros(256, 3, 32, 32)
    layer = photos.sample(256, 32, 32, x, torch.Generator().manual_seed(0))
    is_const = (layer == 1).flatten(1).all(1)
    assert 0.35 < is_const.float().mean() < 0.65  # both photos are used
    tops, lefts = [], []
    for crop in layer[~is_const]:
        r = (crop[0] * 255).round().long()
        c = (crop[1] * 255).round().long()
        top, left = int(r[0, 0]), int(c[0, 0])
        assert torch.equal(r, top + torch.arange(32).view(32, 1).expand(32, 32))
        assert torch.equal(c, left + torch.arange(32).view(1, 32).expand(32, 32))
        tops.append(top)
        lefts.append(left)
    assert 0 <= min(tops) and max(tops) <= h - 32 - 1 and 0 <= min(lefts) and max(lefts) <= w - 32 - 1
    assert len(set(zip(tops, lefts))) > 30  # per-image positions
    # deterministic per generator
    again = photos.sample(256, 32, 32, x, torch.Generator().manual_seed(0))
    assert torch.equal(again, layer)


def test_frost_photos_from_a_folder(tmp_path):
    g = torch.Generator().manual_seed(1)
    arrays = [torch.randint(0, 256, (170 + 10 * i, 175, 3), generator=g, dtype=torch.uint8).numpy() for i in range(3)]
    for i, a in enumerate(arrays):
        PIL.Image.fromarray(a).save(tmp_path / f"frost{3 - i}.png")  # names in reverse order of creation
    PIL.Image.fromarray(arrays[0]).convert("RGBA").save(tmp_path / "frost0.png")  # alpha is dropped
    (tmp_path / "notes.txt").write_text("not an image")
    photos = C.FrostImages(tmp_path, resize=1.0)
    assert photos.names == ["frost0.png", "frost1.png", "frost2.png", "frost3.png"]
    expected = [arrays[0], arrays[2], arrays[1], arrays[0]]
    for got, a in zip(photos.photos, expected):
        assert torch.equal((got * 255).round().to(torch.uint8), torch.from_numpy(a).permute(2, 0, 1))
    # the folder, the files and the tensors give the same corruption
    x = _images(3, 32, n=6)
    a = C.corrupt(x, "frost", 4, seed=0, frost_images=C.FrostImages(tmp_path))
    b = C.corrupt(x, "frost", 4, seed=0, frost_images=sorted(tmp_path.glob("*.png")))
    c = C.corrupt(x, "frost", 4, seed=0, frost_images=[torch.from_numpy(e).permute(2, 0, 1) for e in expected])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert not torch.equal(a, C.corrupt(x, "frost", 4, seed=0))  # not the procedural texture


def test_frost_resize_factor_follows_the_image_size():
    photos = C.FrostImages(torch.rand(1, 3, 400, 400))
    assert photos.factor(28, 28) == photos.factor(32, 32) == pytest.approx(0.2)
    assert photos.factor(64, 64) == pytest.approx(0.4)
    assert photos.factor(224, 224) == pytest.approx(1.4)
    assert C.FrostImages(torch.rand(3, 400, 400), resize=1.0).factor(32, 32) == 1.0
    # 64x64 images crop a 64x64 window of the photo shrunk by 0.4 (a 160x160 photo -> exactly 64x64)
    photo = torch.rand(3, 160, 160)
    ah = C.linear_resize_matrix(160, 0.4)
    out = C.frost(torch.zeros(2, 3, 64, 64), 1, seed=0, frost_images=photo)
    torch.testing.assert_close(out, (0.2 * (ah @ photo @ ah.T)).expand(2, -1, -1, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("factor", [0.5, 2.0, 0.3])
def test_linear_resize_matrix_matches_half_pixel_bilinear(factor):
    # cv2.resize(INTER_LINEAR, fx) = half-pixel-centre bilinear without anti-aliasing, edges clamped:
    # torch's bilinear interpolate with align_corners=False and the same scale factor
    x = torch.rand(1, 1, 20, 30)
    ah, aw = C.linear_resize_matrix(20, factor), C.linear_resize_matrix(30, factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    assert ah.shape == (round(20 * factor), 20)
    torch.testing.assert_close(ah @ x[0, 0] @ aw.T, ref[0, 0], atol=1e-5, rtol=0)


def test_frost_procedural_texture():
    x = torch.zeros(64, 3, 32, 32)
    tex = C._procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(0))
    assert tex.shape == (64, 3, 32, 32) and tex.min() >= 0 and tex.max() <= 1
    assert torch.equal(tex, C._procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(0)))
    assert not torch.equal(tex, C._procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(1)))
    assert not torch.equal(tex[0], tex[1])
    # roughly the statistics of the reference's frost crops (grey mean 0.63, crop means spread 0.15,
    # within-crop std 0.09, mean |horizontal difference| 0.07, bluish)
    grey = _luma(tex)[:, 0]
    assert 0.55 < grey.mean() < 0.7
    assert 0.08 < grey.mean((1, 2)).std() < 0.22
    assert 0.05 < grey.flatten(1).std(1).mean() < 0.13
    assert 0.04 < (grey[..., 1:] - grey[..., :-1]).abs().mean() < 0.11
    assert tex[:, 2].mean() > tex[:, 0].mean() + 0.03
    # corrupt() without photos uses it: frost of a black image is c1 * texture
    out = C.frost(torch.zeros(4, 3, 32, 32), 3, generator=torch.Generator().manual_seed(5))
    ref = 0.4 * C._procedural_frost(4, 32, 32, x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # larger images: same construction at the scaled size
    big = C._procedural_frost(2, 96, 80, x, torch.Generator().manual_seed(0))
    assert big.shape == (2, 3, 96, 80) and 0.3 < big.mean() < 0.9


def test_frost_splat_is_bilinear():
    pts = torch.tensor([[[1.25, 2.5], [3.0, 0.0], [-0.5, 1.0]]])
    out = C._splat(pts, torch.tensor([[1.0, 2.0, 1.0]]), 5, 4)[0, 0]
    ref = torch.zeros(5, 4)
    ref[1, 2], ref[1, 3], ref[2, 2], ref[2, 3] = 0.375, 0.375, 0.125, 0.125
    ref[3, 0] = 2.0
    ref[0, 1] = 0.5  # half of the third point falls outside
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_frost_photo_errors(tmp_path):
    x = _images(3, 32, n=2)
    with pytest.raises(ValueError, match="smaller than the 32x32 images"):
        C.corrupt(x, "frost", 1, frost_images=torch.rand(1, 3, 100, 100))  # 20x20 after resizing by 0.2
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        C.FrostImages(torch.rand(2, 2, 200, 200))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.FrostImages(torch.rand(3, 200, 200) * 2)
    with pytest.raises(ValueError, match="dtype"):
        C.FrostImages(torch.ones(3, 200, 200, dtype=torch.int32))
    with pytest.raises(ValueError, match="no image files"):
        C.FrostImages(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        C.FrostImages(tmp_path / "missing")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        C.FrostImages(tmp_path)
    with pytest.raises(TypeError, match="frost_images"):
        C.FrostImages(3)
    with pytest.raises(ValueError, match="no photographs"):
        C.FrostImages([])
    with pytest.raises(ValueError, match="resize"):
        C.FrostImages(torch.rand(3, 200, 200), resize=0)
    # other corruptions ignore frost_images (so one call can loop over all corruptions)
    torch.testing.assert_close(C.corrupt(x, "fog", 2, seed=0, frost_images="ignored"), C.corrupt(x, "fog", 2, seed=0))


def test_frost_in_transform_and_dataset(tmp_path):
    photo = torch.rand(3, 200, 200)
    t = C.Corrupt("frost", 3, generator=torch.Generator().manual_seed(0), frost_images=photo)
    assert isinstance(t.frost_images, C.FrostImages)
    out, label = t(_images(3, 32, n=1)[0], 4)
    assert label == 4 and out.shape == (3, 32, 32)
    x = (_images(1, 28, n=6) * 255).round().to(torch.uint8)
    y = torch.arange(6)
    mem = C.make_corrupted_dataset(x, y, ["frost"], severities=(2,), seed=1, batch_size=4, frost_images=photo)
    proc = C.make_corrupted_dataset(x, y, ["frost"], severities=(2,), seed=1, batch_size=4)
    assert not torch.equal(mem.images("frost", 2), proc.images("frost", 2))
    C.make_corrupted_dataset(x, y, ["frost"], severities=(2,), seed=1, out_dir=tmp_path / "a")
    assert "procedural" in json.loads((tmp_path / "a" / "meta.json").read_text())["frost"]
    C.make_corrupted_dataset(x, y, ["frost"], severities=(2,), seed=1, out_dir=tmp_path / "b", frost_images=[photo])
    assert "photographs" in json.loads((tmp_path / "b" / "meta.json").read_text())["frost"]


# ---------------------------------------------------------------------------- spatter

# A 16x16 uint8 test image: two "drops" and a horizontal ramp (Sobel 104 < 150: weak edges only reached by
# hysteresis). The expected values were computed with OpenCV 5.0 (opencv-python-headless, cv2.ipp.setUseIPP(False);
# OpenCV's IPP build computes the distances slightly differently, by up to 1e-4):
# cv2.Canny(img, 50, 150), cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5), cv2.equalizeHist(img).
_CV_IMG = [
    [0] * 16, [0, 0, 230] + [0] * 13, [0, 230, 230, 230, 0, 0, 0, 0, 180, 178, 176, 0, 0, 0, 0, 0],
    [230, 230, 230, 230, 230, 0, 187, 185, 183, 181, 179, 177, 175, 0, 0, 0],
    [0, 230, 230, 230, 0, 0, 190, 188, 186, 184, 182, 180, 178, 0, 0, 0],
    [0, 0, 230, 0, 0, 195, 193, 191, 189, 187, 185, 183, 181, 179, 0, 0],
    [0, 0, 0, 0, 0, 198, 196, 194, 192, 190, 188, 186, 184, 182, 0, 0],
    [0, 0, 0, 0, 0, 201, 199, 197, 195, 193, 191, 189, 187, 185, 0, 0],
    [0, 0, 0, 0, 0, 0, 202, 200, 198, 196, 194, 192, 190, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 205, 203, 201, 199, 197, 195, 193, 0, 0, 0],
    [0] * 8 + [204, 202, 200] + [0] * 5, [0] * 16,
] + [[13 * j for j in range(16)]] * 4
_CV_CANNY = [
    "0000000000000000", "0111000000000000", "1101110111110000", "1000101000001000", "1101001000000100",
    "0111010000000100", "0000010000000100", "0000010000000100", "0000010000000100", "0000001000001000",
    "0000000111110000", "0000000000000000", "0111111111111111", "0100000000000000", "0100000000000000",
    "0100000000000000",
]
_CV_DIST_ROW5 = [65536, 0, 0, 0, 65536, 0, 65536, 91750, 143976, 196608, 183500, 131072, 65536, 0, 65536, 131072]
_CV_DIST_SUM = 21545174  # sum of distance * 65536
_CV_EQ_ROW5 = [0, 0, 255, 0, 0, 198, 181, 171, 162, 154, 145, 135, 120, 112, 0, 0]
_CV_EQ_ROW12 = [0, 8, 15, 23, 30, 38, 46, 53, 61, 69, 76, 84, 91, 99, 131, 198]


def test_opencv_ops_match_opencv_values():
    from robaug.eval import _cv_ops as O

    img = torch.tensor(_CV_IMG, dtype=torch.float32).view(1, 1, 16, 16)
    edges = O.canny(img, 50, 150)[0, 0]
    assert ["".join("1" if v else "0" for v in row) for row in edges.tolist()] == _CV_CANNY
    dist = O.chamfer_distance(edges.view(1, 1, 16, 16), 1000.0)[0, 0].double() * 65536
    assert dist[5].round().long().tolist() == _CV_DIST_ROW5
    assert int(dist.sum().round()) == _CV_DIST_SUM
    eq = O.equalize_hist(img)[0, 0]
    assert eq[5].long().tolist() == _CV_EQ_ROW5 and eq[12].long().tolist() == _CV_EQ_ROW12


def _naive_canny(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's documented Canny (3x3 Sobel, replicated border, L1 magnitude, NMS in 4 directions with
    OpenCV's strict / non-strict comparisons, 8-connected hysteresis) with loops and exact tangents."""
    h, w = img.shape
    p = np.pad(img.astype(np.int64), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.abs(gx) + np.abs(gy)
    m = np.pad(mag, 1)  # zero magnitude outside

    def mm(i, j):
        return m[i + 1, j + 1]

    cand = np.zeros((h, w), bool)
    strong = np.zeros((h, w), bool)
    t22, t67 = math.tan(math.radians(22.5)), math.tan(math.radians(67.5))
    for i in range(h):
        for j in range(w):
            v = mag[i, j]
            if v <= math.floor(low):
                continue
            ax, ay = abs(gx[i, j]), abs(gy[i, j])
            if ay < t22 * ax:
                keep = v > mm(i, j - 1) and v >= mm(i, j + 1)
            elif ay > t67 * ax:
                keep = v > mm(i - 1, j) and v >= mm(i + 1, j)
            else:
                s = -1 if gx[i, j] * gy[i, j] < 0 else 1
                keep = v > mm(i - 1, j - s) and v > mm(i + 1, j + s)
            cand[i, j] = keep
            strong[i, j] = keep and v > math.floor(high)
    edges = strong.copy()
    stack = list(zip(*np.nonzero(strong)))
    while stack:
        i, j = stack.pop()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and cand[a, b] and not edges[a, b]:
                    edges[a, b] = True
                    stack.append((a, b))
    return edges


def _naive_chamfer(sources: np.ndarray) -> np.ndarray:
    """Dijkstra over the 5x5 chamfer graph (steps 1, 1.4, 2.1969 in OpenCV's Q16), from all sources."""
    import heapq

    h, w = sources.shape
    a, b, c = 1.0, round(1.4 * 65536) / 65536, round(2.1969 * 65536) / 65536
    steps = [(0, 1, a), (1, 0, a), (0, -1, a), (-1, 0, a), (1, 1, b), (1, -1, b), (-1, 1, b), (-1, -1, b)]
    steps += [(dy, dx, c) for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))]
    d = np.full((h, w), np.inf)
    heap = [(0.0, i, j) for i, j in zip(*np.nonzero(sources))]
    for _, i, j in heap:
        d[i, j] = 0.0
    heapq.heapify(heap)
    while heap:
        dist, i, j = heapq.heappop(heap)
        if dist > d[i, j]:
            continue
        for dy, dx, cost in steps:
            y, x = i + dy, j + dx
            if 0 <= y < h and 0 <= x < w and dist + cost < d[y, x]:
                d[y, x] = dist + cost
                heapq.heappush(heap, (dist + cost, y, x))
    return d


def _liquid_u8(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    liquid = C._gaussian_filter(0.65 + 0.3 * torch.randn(n, 1, size, size, generator=g), 1.0, 4.0, "nearest")
    return torch.where(liquid < 0.69, 0.0, torch.floor(liquid * 255).remainder(256))


def test_canny_and_chamfer_match_naive_references():
    from robaug.eval import _cv_ops as O

    imgs = torch.cat([_liquid_u8(6, 20, 0), (_images(1, 20, n=2) * 255).round()])
    edges = O.canny(imgs, 50, 150)
    assert edges.any()
    for e, img in zip(edges[:, 0].numpy(), imgs[:, 0].numpy()):
        np.testing.assert_array_equal(e, _naive_canny(img, 50, 150))
        d = O.chamfer_distance(torch.from_numpy(e).view(1, 1, 20, 20), 20.0)[0, 0].double().numpy()
        np.testing.assert_allclose(d, np.minimum(_naive_chamfer(e), 20.0), atol=1e-6)
    # no source at all: the truncation value everywhere (OpenCV: "infinite", then truncated)
    none = O.chamfer_distance(torch.zeros(1, 1, 8, 8, dtype=torch.bool), 20.0)
    assert torch.equal(none, torch.full_like(none, 20.0))


def test_equalize_hist_matches_the_opencv_formula():
    from robaug.eval import _cv_ops as O

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(30, 200, (3, 1, 12, 12), generator=g).float()
    imgs[2] = 77.0  # constant image: unchanged
    out = O.equalize_hist(imgs)
    for img, o in zip(imgs[:2, 0].long().numpy(), out[:2, 0].numpy()):
        hist = np.bincount(img.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        i0 = img.min()
        lut = np.round((cdf - cdf[i0]) * np.float32(255.0 / (img.size - hist[i0])))
        np.testing.assert_array_equal(o, lut[img])
    assert torch.equal(out[2], imgs[2])


@pytest.mark.parametrize("severity,seed", [(1, 7), (3, 1)])
def test_spatter_water_matches_a_reference_pipeline(severity, seed):
    # make_cifar_c.py's water branch re-run in numpy on the same liquid layer, with the naive Canny / Dijkstra
    # distance above: liquid_u8 = (liquid * 255).astype(np.uint8) (wraps above 1), dist = blur(min(distance to
    # edges, 20)) -> uint8 -> equalizeHist -> emboss -> uint8 -> blur, m = liquid_u8 * dist / max * amount,
    # out = clip(x + m * (175, 238, 238) / 255)
    from robaug.eval import _cv_ops as O

    mean, std, sigma, thresh, amount, _ = C.CORRUPTION_PARAMS["spatter"][severity - 1]
    x = _images(3, 24, n=3)
    out = C.corrupt(x, "spatter", severity, seed=seed)
    g = torch.Generator().manual_seed(seed)
    liquid = C._gaussian_filter(mean + std * torch.randn(3, 1, 24, 24, generator=g), sigma, 4.0, "nearest")
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    if severity == 3:
        assert liquid.max() > 1  # exercises the uint8 wrap-around
    l8 = (liquid[:, 0].double().numpy() * 255).astype(np.int64) % 256

    def box3(a):
        p = np.pad(a, 1, mode="reflect")  # OpenCV's default border, reflect-101
        return sum(p[i: i + a.shape[0], j: j + a.shape[1]] for i in range(3) for j in range(3)) / 9

    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
    water = np.array([175, 238, 238]) / 255
    for k in range(3):
        edges = _naive_canny(l8[k], 50, 150)
        dist = np.floor(box3(np.minimum(_naive_chamfer(edges), 20.0)))
        dist = O.equalize_hist(torch.from_numpy(dist).view(1, 1, 24, 24))[0, 0].double().numpy()
        p = np.pad(dist, 1, mode="reflect")
        emb = sum(ker[i, j] * p[i: i + 24, j: j + 24] for i in range(3) for j in range(3))
        dist = np.round(box3(np.clip(np.round(emb), 0, 255)))
        m = l8[k] * dist
        m = m / m.max() * amount
        ref = np.clip(x[k].double().numpy() + m[None] * water[:, None, None], 0, 1)
        np.testing.assert_allclose(out[k].double().numpy(), ref, atol=1e-5)
    assert (out >= x - 1e-6).all()  # water only adds light


def test_spatter_mud_is_the_formula():
    x = _images(3, 32, n=4)
    out = C.corrupt(x, "spatter", 5, seed=2)  # (0.65, 0.1, 0.5, 0.68, 0.6, mud)
    g = torch.Generator().manual_seed(2)
    liquid = C._gaussian_filter(0.65 + 0.1 * torch.randn(4, 1, 32, 32, generator=g), 0.5, 4.0, "nearest")
    liquid = torch.where(liquid < 0.68, torch.zeros_like(liquid), liquid)
    m = C._gaussian_filter((liquid > 0.68).float(), 0.6, 4.0, "nearest")
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    brown = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    torch.testing.assert_close(out, (x * (1 - m) + brown * m).clamp(0, 1), atol=1e-6, rtol=0)
    assert (m > 0).any()
    # greyscale: the RGB result converted with luma
    grey = _images(1, 32, n=4)
    torch.testing.assert_close(C.corrupt(grey, "spatter", 5, seed=2),
                               _luma((grey * (1 - m) + brown * m).clamp(0, 1)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_spatter_strength_rises_within_water_and_within_mud(channels, size):
    x = _images(channels, size, n=16, seed=3)
    dist = [float((C.corrupt(x, "spatter", s, seed=0) - x).abs().mean()) for s in range(1, 6)]
    assert dist[0] < dist[1] < dist[2], dist  # water
    assert dist[3] < dist[4], dist  # mud
