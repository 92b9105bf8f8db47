"""Tests for robaug.eval.frost: frost photographs (FrostImages), the procedural texture and the frost corruption."""

from __future__ import annotations

import json

import PIL.Image
import pytest
import torch

from robaug.eval import _cv_ops as O
from robaug.eval import corruptions as C
from robaug.eval import frost as FR

from ._helpers import _images, _luma

FROST_TABLE = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))


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
    ah = O.linear_resize_matrix(160, 0.4)
    out = C.frost(torch.zeros(2, 3, 64, 64), 1, seed=0, frost_images=photo)
    torch.testing.assert_close(out, (0.2 * (ah @ photo @ ah.T)).expand(2, -1, -1, -1), atol=1e-6, rtol=0)


def test_frost_procedural_texture():
    x = torch.zeros(64, 3, 32, 32)
    tex = FR.procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(0))
    assert tex.shape == (64, 3, 32, 32) and tex.min() >= 0 and tex.max() <= 1
    assert torch.equal(tex, FR.procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(0)))
    assert not torch.equal(tex, FR.procedural_frost(64, 32, 32, x, torch.Generator().manual_seed(1)))
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
    ref = 0.4 * FR.procedural_frost(4, 32, 32, x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # larger images: same construction at the scaled size
    big = FR.procedural_frost(2, 96, 80, x, torch.Generator().manual_seed(0))
    assert big.shape == (2, 3, 96, 80) and 0.3 < big.mean() < 0.9


def test_frost_splat_is_bilinear():
    pts = torch.tensor([[[1.25, 2.5], [3.0, 0.0], [-0.5, 1.0]]])
    out = FR._splat(pts, torch.tensor([[1.0, 2.0, 1.0]]), 5, 4)[0, 0]
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
