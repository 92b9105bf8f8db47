"""Tests for robaug.eval.catalogue: the corruption names, families and CIFAR-10-C parameter tables."""

from __future__ import annotations

from robaug.eval import corruptions as C

NAMES = C.available_corruptions()


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
