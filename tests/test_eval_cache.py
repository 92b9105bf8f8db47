"""The built -C set and the re-evaluation of finished runs follow the corruption list, including the default one."""

from __future__ import annotations

import torch

import robaug.eval.corruptions as corruptions_mod
from robaug.recipes.datasets import DatasetInfo, TensorImages
from robaug.recipes.evaluate import corruption_benchmark
from robaug.recipes.train import TrainConfig, _eval_signature

INFO = DatasetInfo("tiny", 2, 1, 8, (0.5,), (0.5,))


def _test_set() -> TensorImages:
    g = torch.Generator().manual_seed(0)
    return TensorImages(torch.randint(0, 256, (4, 1, 8, 8), generator=g, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))


def test_cache_is_keyed_by_the_corruption_list(tmp_path, monkeypatch):
    test = _test_set()
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast",))
    first, _ = corruption_benchmark(INFO, test, num_images=4, cache_dir=tmp_path)
    assert first.corruptions == ["contrast"]
    again, _ = corruption_benchmark(INFO, test, num_images=4, cache_dir=tmp_path)
    assert again.root == first.root  # reused
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast", "brightness"))
    grown, note = corruption_benchmark(INFO, test, num_images=4, cache_dir=tmp_path)
    assert grown.root != first.root and grown.corruptions == ["brightness", "contrast"]
    assert "2 corruptions" in note
    explicit, _ = corruption_benchmark(INFO, test, num_images=4, cache_dir=tmp_path, corruptions=["contrast"])
    assert explicit.root == first.root  # the same list, however it was asked for


def test_eval_signature_changes_with_the_default_corruption_list(monkeypatch):
    cfg = TrainConfig(eval_corruptions=True).to_dict()
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast",))
    before = _eval_signature(cfg)
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast", "frost"))
    assert _eval_signature(cfg) != before
    on_files = {**cfg, "corruption_root": "/data/CIFAR-10-C"}  # published files: the list is whatever is on disk
    with_frost = _eval_signature(on_files)
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast",))
    assert _eval_signature(on_files) == with_frost
