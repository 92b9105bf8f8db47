"""Tests for robaug.eval.corruptions: corrupt / Corrupt / make_corrupted_dataset on every corruption (determinism,
ranges, shapes, severity ordering, input types, errors, the generator policy, the -C set builder)."""

from __future__ import annotations

import os
import stat

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors

from robaug.eval import corruptions as C

from ._helpers import _images

NAMES = C.available_corruptions()


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


def test_generator_must_be_a_torch_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        C.corrupt(_images(3, 16), "fog", 1, generator=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cpu_generator_with_cuda_images_draws_the_cpu_numbers(name):  # pragma: no cover - needs a GPU
    # robaug._core.rng's policy: draw on the generator's device and move the numbers to the images' device, so a
    # CPU generator gives the CPU result on CUDA images (up to float differences between the devices' kernels)
    x = _images(3, 32, n=3)
    ref = C.corrupt(x, name, 4, generator=torch.Generator().manual_seed(7))
    out = C.corrupt(x.cuda(), name, 4, generator=torch.Generator().manual_seed(7))
    assert out.device.type == "cuda"
    close = (out.cpu() - ref).abs() <= 1e-4
    # pixel shuffles and thresholds may flip a few pixels where a float difference crosses a rounding boundary
    assert close.float().mean() > 0.99, name
    same_device = C.corrupt(x.cuda(), name, 4, generator=torch.Generator("cuda").manual_seed(7))
    assert same_device.shape == x.shape


def test_corrupted_set_files_are_written_atomically_with_the_umask(tmp_path):
    x = (_images(1, 16, n=4) * 255).round().to(torch.uint8)
    old = os.umask(0o027)
    try:
        C.make_corrupted_dataset(x, torch.arange(4), ["contrast"], severities=(1,), out_dir=tmp_path)
    finally:
        os.umask(old)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["contrast.npy", "labels.npy", "meta.json"]  # no temporary file left behind
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p.name
