"""The built -C set and the re-evaluation of finished runs follow the corruption list, including the default one."""

from __future__ import annotations

import torch

import robaug.eval.corruptions as corruptions_mod
from robaug.data.datasets import DatasetInfo, TensorImages
from robaug.recipes.evaluate import corruption_benchmark
from robaug.recipes.train import TrainConfig, _eval_signature, train

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


def test_finished_run_is_evaluated_again_when_the_default_list_grows(tmp_path, monkeypatch):
    cfg = dict(train_subset=256, test_subset=64, batch_size=32, model="small_cnn", model_kwargs={"width": 4},
               steps=2, eval_corruptions=True, corruption_images=8, cache_dir=str(tmp_path / "c"), progress=False,
               log_every=1, ckpt_every=0, out_dir=str(tmp_path / "run"))
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("contrast",))
    first = train(TrainConfig(**cfg))
    assert list(first["corruption"]["per_corruption_accuracy"]) == ["contrast"]
    same = train(TrainConfig(**cfg))  # nothing changed: the stored results come back
    assert same["eval_seconds"] == first["eval_seconds"]
    monkeypatch.setattr(corruptions_mod, "DEFAULT_CORRUPTIONS", ("brightness", "contrast"))
    grown = train(TrainConfig(**cfg))
    assert set(grown["corruption"]["per_corruption_accuracy"]) == {"brightness", "contrast"}
    assert grown["train_seconds"] == first["train_seconds"]  # evaluated again, not retrained
    assert grown["clean_accuracy"] == first["clean_accuracy"]
    published = {**TrainConfig(**cfg).to_dict(), "corruption_root": "/data/CIFAR-10-C"}
    # on published files the list is whatever is on disk, not the default one
    assert _eval_signature(published, ["fog"]) == _eval_signature(published)
