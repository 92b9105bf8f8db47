"""Procedural IFS fractals and the mixing-set sources (generated, tensor, folder, dataset)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import robaug.transforms.mixing_set as mixing_set
from robaug.transforms.fractals import MixingSet, chaos_game, generate_fractals, sample_ifs


def test_generate_shape_range_and_determinism():
    a = generate_fractals(24, 32, seed=3)
    assert a.shape == (24, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, generate_fractals(24, 32, seed=3))
    assert not torch.allclose(a, generate_fractals(24, 32, seed=4))
    # the images differ from each other and are not blank
    flat = a.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(24) * 1e3).min() > 1.0
    assert (a.amax((1, 2, 3)) > 0.5).all()


def test_a_fractal_is_a_bright_shape_on_a_dim_background():
    imgs = generate_fractals(16, 32, seed=0, background=False)
    lit = (imgs.amax(1) > 0.05).float().mean((1, 2))  # canvas covered by the attractor
    assert ((lit >= 0.05) & (lit <= 0.8)).all()
    with_bg = generate_fractals(16, 32, seed=0)
    assert (with_bg.mean((1, 2, 3)) > imgs.mean((1, 2, 3)) - 1e-6).all()


def test_sampled_maps_are_contractions_with_valid_probabilities():
    coeffs, probs = sample_ifs(64, generator=torch.Generator().manual_seed(0))
    a = coeffs[..., [0, 1, 3, 4]].view(64, -1, 2, 2)
    used = probs > 0
    sv = torch.linalg.svdvals(a)
    assert (sv[used] < 1).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(64))
    assert (used.sum(1) >= 2).all()


def test_chaos_game_stays_on_the_sierpinski_triangle():
    # Three maps p -> (p + v_k) / 2 towards the corners of a triangle: the attractor is the Sierpinski triangle.
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    coeffs = torch.zeros(1, 3, 6)
    coeffs[0, :, 0] = coeffs[0, :, 4] = 0.5
    coeffs[0, :, 2], coeffs[0, :, 5] = corners[:, 0] / 2, corners[:, 1] / 2
    probs = torch.full((1, 3), 1 / 3)
    xs, ys, maps = chaos_game(coeffs, probs, num_points=256, num_iters=20, generator=torch.Generator().manual_seed(0))
    x, y = xs.flatten(), ys.flatten()
    eps = 1e-5
    assert (y >= -eps).all() and (y <= 2 * x + eps).all() and (y <= 2 * (1 - x) + eps).all()  # inside the triangle
    # the central hole (the first removed triangle) is never visited
    outside_hole = (y >= 0.5 - eps) | (y <= 2 * x - 1 + eps) | (y <= 1 - 2 * x + eps)
    assert outside_hole.all()
    inside_hole = (y < 0.45) & (y > 2 * x - 0.95) & (y > 1.05 - 2 * x)
    assert not inside_hole.any()
    # every map is used about a third of the time, and each point is in the sub-triangle of its map
    counts = torch.bincount(maps.flatten(), minlength=3).float() / maps.numel()
    assert ((counts - 1 / 3).abs() < 0.02).all()
    sub = maps.flatten()
    assert ((x - corners[sub, 0] / 2).abs() <= 0.5 + eps).all() and ((y - corners[sub, 1] / 2) <= 0.5 + eps).all()


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
    torch.testing.assert_close(gray, TF.rgb_to_grayscale(ms.sample(torch.tensor([1]), (16, 16), 3)), atol=2 / 255, rtol=0)
    rgb_from_gray = MixingSet(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)).sample(torch.tensor([1]), (8, 8), 3)
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
