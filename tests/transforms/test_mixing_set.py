"""The mixing-set sources (generated fractals with their disk cache, tensor, folder, dataset)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import robaug.transforms.mixing_set as mixing_set
from robaug.transforms.fractals import MixingSet, generate_fractals


def test_mixing_set_from_tensor_resizes_and_converts_channels():
    src = torch.rand(5, 3, 20, 30)
    ms = MixingSet(src)
    assert len(ms) == 5
    out = ms.sample(torch.tensor([0, 4, 4]), (16, 16), 3)
    assert out.shape == (3, 3, 16, 16) and 0 <= out.min() and out.max() <= 1
    ref = TF.center_crop(TF.resize(src[[0]], [16, 24], antialias=True), [16, 16])
    torch.testing.assert_close(out[:1], ref, atol=1 / 255 + 1e-6, rtol=0)  # stored as uint8
    gray = ms.sample(torch.tensor([1]), (16, 16), 1)
    assert gray.shape == (1, 1, 16, 16)
    torch.testing.assert_close(gray, TF.rgb_to_grayscale(ms.sample(torch.tensor([1]), (16, 16), 3)),
                               atol=2 / 255, rtol=0)
    rgb_from_gray = MixingSet(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)).sample(
        torch.tensor([1]), (8, 8), 3)
    assert rgb_from_gray.shape == (1, 3, 8, 8) and torch.equal(rgb_from_gray[:, 0], rgb_from_gray[:, 2])


def test_mixing_set_bad_sources_raise(tmp_path):
    with pytest.raises(ValueError, match="1 or 3 channels"):
        MixingSet(torch.rand(4, 4, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        MixingSet(torch.rand(0, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        MixingSet(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="no image files"):
        MixingSet(tmp_path)
    with pytest.raises(FileNotFoundError):
        MixingSet(tmp_path / "missing")
    with pytest.raises(TypeError, match="mixing_set must be"):
        MixingSet(42)


def test_mixing_set_from_folder_and_dataset(tmp_path):
    imgs = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    (tmp_path / "sub").mkdir()
    for i in range(3):
        TF.to_pil_image(imgs[i]).save(tmp_path / "sub" / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = MixingSet(tmp_path)
    assert len(folder) == 3
    assert torch.equal((folder.sample(torch.arange(3), (12, 12), 3) * 255).round().byte(), imgs)

    pil_items = [(TF.to_pil_image(imgs[i]), i) for i in range(3)]  # (image, label) like torchvision datasets
    from_pil = MixingSet(pil_items)
    assert torch.equal((from_pil.sample(torch.arange(3), (12, 12), 3) * 255).round().byte(), imgs)
    tensors = MixingSet([imgs[i] for i in range(3)])
    assert torch.equal((tensors.sample(torch.tensor([2]), (12, 12), 3) * 255).round().byte(), imgs[2:])
    with pytest.raises(TypeError, match="item 0"):
        MixingSet(["not an image"]).sample(torch.tensor([0]), (8, 8), 3)


def test_default_mixing_set_is_lazy_deterministic_and_cached(tmp_path, monkeypatch):
    ms = MixingSet(num_images=16, seed=1, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing generated before first use
    a = ms.sample(torch.arange(16), (32, 32), 3)
    assert a.shape == (16, 3, 32, 32)
    assert torch.equal((a * 255).round().byte(), (generate_fractals(16, 32, seed=1) * 255).round().byte())
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the disk cache")

    monkeypatch.setattr(mixing_set, "generate_fractals", fail)
    again = MixingSet(num_images=16, seed=1, cache_dir=tmp_path).sample(torch.arange(16), (32, 32), 3)
    assert torch.equal(a, again)
    # non-square inputs get a centre crop of the square fractals
    crop = ms.sample(torch.arange(2), (32, 20), 1)
    assert crop.shape == (2, 1, 32, 20)


def test_large_inputs_get_fractals_rendered_at_render_size_and_upsampled():
    ms = MixingSet(num_images=4, seed=2, render_size=16)
    big = ms.sample(torch.arange(4), (48, 48), 3)
    small = generate_fractals(4, 16, seed=2)
    ref = TF.resize((small * 255).round() / 255, [48, 48], antialias=False)
    torch.testing.assert_close(big, ref, atol=1 / 255 + 1e-6, rtol=0)


def test_pickling_keeps_the_uint8_set_and_drops_float_copies():
    import pickle

    ms = MixingSet(torch.rand(3, 3, 8, 8))
    a = ms.sample(torch.arange(3), (8, 8), 3)
    clone = pickle.loads(pickle.dumps(ms))
    assert all(key[-1] != "float" for key in clone._cache)
    assert torch.equal(clone.sample(torch.arange(3), (8, 8), 3), a)


def test_the_disk_cache_is_written_atomically_with_the_users_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        MixingSet(num_images=2, seed=3, cache_dir=tmp_path).prepare(8)
    finally:
        os.umask(old)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # no temporary file left behind
    assert files[0].stat().st_mode & 0o777 == 0o640


def test_settings_are_checked_naming_the_argument():
    for kwargs, match in [
        (dict(num_images=float("nan")), "MixingSet: num_images must be a whole number"),
        (dict(num_images=0), "MixingSet: num_images must be >= 1"),
        (dict(render_size=2), "MixingSet: render_size must be >= 4"),
        (dict(seed=1.5), "MixingSet: seed must be a whole number"),
        (dict(max_images=0), "MixingSet: max_images must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            MixingSet(**kwargs)
