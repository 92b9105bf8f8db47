"""Tests for robaug.eval.catalogue: the corruption names, families and CIFAR-10-C parameter tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def test_registry_is_the_one_table_behind_the_public_names():
    from robaug.eval import catalogue as K

    assert K.CORRUPTIONS.names() == C.available_corruptions() == list(K.BENCHMARK_CORRUPTIONS + K.EXTRA_CORRUPTIONS)
    assert K.CORRUPTIONS.names(lambda n, s: s.benchmark) == list(C.BENCHMARK_CORRUPTIONS)
    for name in NAMES:
        spec = K.CORRUPTIONS[name]
        assert spec.family == C.CORRUPTION_FAMILIES[name] and spec.params == C.CORRUPTION_PARAMS[name]
        assert [spec.param(s) for s in K.SEVERITIES] == list(C.CORRUPTION_PARAMS[name])
    assert {K.CORRUPTIONS[n].family for n in NAMES} == {"noise", "blur", "weather", "digital"}
    # the catalogue applies the operation with the severity's parameter: the same numbers as corrupt()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("gaussian_noise", "motion_blur", "fog", "elastic_transform"):
        ref = C.corrupt(x, name, 4, generator=torch.Generator().manual_seed(1))
        out = K.apply_corruption(x, name, 4, torch.Generator().manual_seed(1))
        assert torch.equal(out, ref), name


def test_unknown_names_and_severities_are_named_in_the_error():
    from robaug.eval import catalogue as K

    with pytest.raises(ValueError, match=r"unknown corruption 'gaussian_nosie'; did you mean 'gaussian_noise'"):
        K.corruption_param("gaussian_nosie", 1)
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError, match="severity must be an int in 1..5"):
            K.corruption_param("fog", bad)
    assert K.corruption_param("fog", np.int64(5)) == (1.5, 1.75)
