"""Procedural IFS fractals: sampled maps are contractions, the chaos game stays on the attractor, rendering."""

from __future__ import annotations

import torch

from robaug.transforms.fractals import chaos_game, generate_fractals, sample_ifs


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
