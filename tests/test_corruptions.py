"""Tests for robaug.eval.corruptions: determinism, ranges, shapes, severity ordering, and comparisons with
independent references (the paper's formulas, PIL, torchvision, colorsys, numpy, naive loops)."""

from __future__ import annotations

import colorsys
import io
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
    assert len(C.DEFAULT_CORRUPTIONS) == 14 and "frost" not in C.DEFAULT_CORRUPTIONS
    assert set(NAMES) == set(C.DEFAULT_CORRUPTIONS) | {"speckle_noise", "gaussian_blur", "saturate"}
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
# pixelate's box resampling aliases differently at each size, e.g. 23 vs 21 pixels at 28x28).
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


@pytest.mark.parametrize("name", ["glass_blur", "elastic_transform", "snow", "saturate", "pixelate"])
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
    with pytest.raises(ValueError, match="not implemented"):
        C.corrupt(x, "frost", 1)
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
