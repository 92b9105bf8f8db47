"""Tests for robaug.eval.evaluation and robaug.eval.datasets: -C layouts, the evaluation loop, results against
hand-computed values; and the old path robaug.eval.benchmarks, which still resolves with a FutureWarning."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robaug.eval.corruptions import make_corrupted_dataset
from robaug.eval.datasets import ImageFolderCorruptionBenchmark, NpyCorruptionBenchmark, open_corruption_benchmark
from robaug.eval.evaluation import evaluate_corruptions, evaluate_error
from robaug.eval.metrics import ALEXNET_ERRORS, CorruptionResults

NUM_CLASSES = 10
STEP = 20  # an image whose pixels all equal STEP * k / 255 is classified as k


class PixelClassifier(nn.Module):
    """Known predictions: class = round(mean pixel * 255 / STEP); one-hot "logits"."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dummy", torch.zeros(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        k = (x.mean(dim=(1, 2, 3)) * 255 / STEP).round().long().clamp(0, NUM_CLASSES - 1)
        return F.one_hot(k, NUM_CLASSES).float()


def _encode(pred: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images (N, *shape) whose PixelClassifier prediction is ``pred``."""
    return np.broadcast_to((pred * STEP).astype(np.uint8).reshape(-1, *([1] * len(shape))), (len(pred), *shape)).copy()


# hand-chosen number of wrong predictions out of N = 10, per corruption and severity
N = 10
WRONG = {
    "gaussian_noise": [1, 2, 3, 4, 5],
    "contrast": [0, 0, 1, 1, 3],
    "fog": [2, 2, 2, 2, 2],
}
LABELS = np.arange(N) % NUM_CLASSES


def _preds(wrong: int) -> np.ndarray:
    p = LABELS.copy()
    p[:wrong] = (p[:wrong] + 1) % NUM_CLASSES
    return p


def _write_cifar_c(root, hwc=(8, 8, 3), full_labels=True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for c, wrong in WRONG.items():
        arr = np.concatenate([_encode(_preds(w), hwc) for w in wrong])
        np.save(root / f"{c}.npy", arr)
    labels = np.tile(LABELS, 5) if full_labels else LABELS
    np.save(root / "labels.npy", labels.astype(np.uint8))


def _expected_errors() -> dict[str, dict[int, float]]:
    return {c: {s + 1: w / N for s, w in enumerate(ws)} for c, ws in WRONG.items()}


# ---------------------------------------------------------------------------- layouts + evaluation


@pytest.mark.parametrize("hwc,full_labels", [((8, 8, 3), True), ((6, 6, 1), False), ((6, 6), True)])
def test_cifar_c_layout_errors_match_hand_values(tmp_path, hwc, full_labels):
    _write_cifar_c(tmp_path, hwc, full_labels)
    bench = open_corruption_benchmark(tmp_path)
    assert isinstance(bench, NpyCorruptionBenchmark)
    assert bench.corruptions == ["gaussian_noise", "fog", "contrast"]  # benchmark order
    assert bench.severities == [1, 2, 3, 4, 5]
    res = evaluate_corruptions(PixelClassifier(), bench, batch_size=3)
    for c in WRONG:
        for s in range(1, 6):
            assert res.errors[c][s] == pytest.approx(WRONG[c][s - 1] / N)
            assert res.num_samples[c][s] == N
    # CE: gaussian 0.3, contrast 0.1, fog 0.2 -> mean 0.2
    assert res.corruption_errors == pytest.approx({"gaussian_noise": 0.3, "contrast": 0.1, "fog": 0.2})
    assert res.mean_corruption_error == pytest.approx(0.2)
    assert res.severity_errors[5] == pytest.approx((0.5 + 0.3 + 0.2) / 3)
    assert res.family_errors == pytest.approx({"noise": 0.3, "digital": 0.1, "weather": 0.2})
    assert res.mce is None and res.relative_mce is None


def test_evaluate_with_clean_set_baseline_and_subset(tmp_path):
    _write_cifar_c(tmp_path)
    clean_images = torch.from_numpy(_encode(_preds(1), (3, 8, 8)))  # (N, 3, 8, 8) uint8, 1 wrong
    clean = (clean_images, torch.from_numpy(LABELS))
    res = evaluate_corruptions(
        PixelClassifier(), str(tmp_path), clean=clean, corruptions=["fog", "gaussian_noise"],
        baseline={"fog": 0.4, "gaussian_noise": 0.6},
    )
    assert res.clean_error == pytest.approx(0.1)
    assert list(res.errors) == ["fog", "gaussian_noise"]
    assert res.mce == pytest.approx((0.2 / 0.4 + 0.3 / 0.6) / 2)
    assert res.relative_mce is None  # no baseline clean error
    res2 = res.with_baseline(({"fog": 0.4, "gaussian_noise": 0.6}, 0.05))
    assert res2.relative_mce == pytest.approx(((0.2 - 0.1) / 0.35 + (0.3 - 0.1) / 0.55) / 2)
    # severity subset
    res5 = evaluate_corruptions(PixelClassifier(), tmp_path, severities=[5])
    assert res5.severities == [5]
    assert res5.mean_corruption_error == pytest.approx((0.5 + 0.3 + 0.2) / 3)
    # another model's results as the baseline: normalise by its errors at the same severities
    base = CorruptionResults({c: {5: 0.5} for c in WRONG}, clean_error=0.2, name="base")
    r = res5.with_baseline(base)
    assert r.mce == pytest.approx(((0.5 + 0.3 + 0.2) / 3) / 0.5)
    assert r.relative_mce is None  # evaluated without a clean set
    res5c = evaluate_corruptions(PixelClassifier(), tmp_path, severities=[5], clean=clean, baseline=base)
    # rCE_c = (E_c - 0.1) / (0.5 - 0.2)
    assert res5c.relative_mce == pytest.approx(np.mean([(e - 0.1) / 0.3 for e in (0.5, 0.3, 0.2)]))


def test_clean_set_as_dataset_and_dataloader():
    imgs = torch.from_numpy(_encode(_preds(3), (1, 5, 5)))
    labels = torch.from_numpy(LABELS)
    ds = torch.utils.data.TensorDataset(imgs, labels)
    assert evaluate_error(PixelClassifier(), ds, batch_size=4) == pytest.approx(0.3)
    dl = torch.utils.data.DataLoader(ds, batch_size=4)
    assert evaluate_error(PixelClassifier(), dl) == pytest.approx(0.3)
    assert evaluate_error(PixelClassifier(), (imgs, labels)) == pytest.approx(0.3)


def test_imagenet_c_layout(tmp_path):
    # <root>/<corruption>/<severity>/<class>/<image>; class folders sort as the class indices
    for c in ("fog", "contrast"):
        for s in (1, 2, 3, 4, 5):
            wrong = WRONG[c][s - 1]
            preds = _preds(wrong)
            for i, (label, pred) in enumerate(zip(LABELS, preds)):
                d = tmp_path / c / str(s) / f"n{label:08d}"
                d.mkdir(parents=True, exist_ok=True)
                PIL.Image.new("RGB", (6, 6), (int(pred * STEP),) * 3).save(d / f"{i}.png")
    bench = open_corruption_benchmark(tmp_path)
    assert isinstance(bench, ImageFolderCorruptionBenchmark)
    assert bench.corruptions == ["fog", "contrast"] and bench.severities == [1, 2, 3, 4, 5]
    res = evaluate_corruptions(PixelClassifier(), bench, batch_size=4)
    for c in ("fog", "contrast"):
        for s in range(1, 6):
            assert res.errors[c][s] == pytest.approx(WRONG[c][s - 1] / N)
    # AlexNet normalisation over the corruptions present
    r = res.with_baseline("alexnet")
    expected = (0.2 / ALEXNET_ERRORS["fog"] + 0.1 / ALEXNET_ERRORS["contrast"]) / 2
    assert r.mce == pytest.approx(expected)


def test_model_mode_restored_and_normalize(tmp_path):
    _write_cifar_c(tmp_path)

    class RangeChecker(PixelClassifier):
        def forward(self, x):
            assert not self.training
            # normalize=(0.5, 0.25): the classifier sees (x - 0.5) / 0.25; undo it for the lookup
            return super().forward(x * 0.25 + 0.5)

    m = RangeChecker().train()
    res = evaluate_corruptions(m, tmp_path, normalize=([0.5] * 3, [0.25] * 3))
    assert m.training
    assert res.corruption_errors["gaussian_noise"] == pytest.approx(0.3)


def test_diffaug_ensemble_option_wraps_the_model(tmp_path, monkeypatch):
    _write_cifar_c(tmp_path)
    created = {}

    class FakeEnsemble(nn.Module):
        def __init__(self, classifier, denoiser, timesteps=None, **kw):
            super().__init__()
            self.classifier, self.denoiser = classifier, denoiser
            created.update(timesteps=timesteps, kw=kw)

        def forward(self, x):
            return self.classifier(self.denoiser(x))

    class ZeroDenoiser(nn.Module):
        """Stands in for a denoiser: maps every image to black, which PixelClassifier reads as class 0."""

        def forward(self, x):
            return torch.zeros_like(x)

    fake = types.ModuleType("robaug.transforms.diffaug")
    fake.DiffAugEnsemble = FakeEnsemble
    monkeypatch.setitem(sys.modules, "robaug.transforms.diffaug", fake)
    clf = PixelClassifier()
    res = evaluate_corruptions(
        clf, tmp_path, denoiser=ZeroDenoiser(), ensemble_timesteps=[0, 50, 100], ensemble_kwargs={"batch_size": 8}
    )
    assert created == {"timesteps": [0, 50, 100], "kw": {"batch_size": 8}}
    assert clf.calls > 0
    # every prediction is class 0 and labels are 0..9: error 0.9 everywhere
    assert all(e == pytest.approx(0.9) for by in res.errors.values() for e in by.values())
    with pytest.raises(ValueError, match="denoiser"):
        evaluate_corruptions(clf, tmp_path, ensemble_timesteps=[0, 50])


def test_results_serialisation(tmp_path):
    res = CorruptionResults(_expected_errors(), clean_error=0.05, name="m").with_baseline(
        ({"gaussian_noise": 0.6, "contrast": 0.5, "fog": 0.4}, 0.1)
    )
    path = tmp_path / "r.json"
    res.save_json(path)
    d = json.loads(path.read_text())
    assert d["mean_corruption_error"] == pytest.approx(0.2)
    back = CorruptionResults.from_dict(d)
    assert back.errors == res.errors and back.mce == pytest.approx(res.mce)
    md = res.to_markdown()
    assert "| gaussian_noise | 10.00 | 20.00 | 30.00 | 40.00 | 50.00 | 30.00 |" in md
    assert "mean corruption error (unnormalised): 20.00%" in md


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.npy|neither"):
        open_corruption_benchmark(tmp_path)
    _write_cifar_c(tmp_path)
    with pytest.raises(KeyError, match="frost"):
        evaluate_corruptions(PixelClassifier(), tmp_path, corruptions=["frost"])
    with pytest.raises(TypeError, match="baseline"):
        evaluate_corruptions(PixelClassifier(), tmp_path, baseline=3.0)


def test_end_to_end_with_generated_set_and_small_cnn():
    from robaug.models import create_model

    torch.manual_seed(0)
    x = (torch.rand(12, 1, 28, 28) * 255).to(torch.uint8)
    y = torch.arange(12) % 10
    bench = make_corrupted_dataset(x, y, ["gaussian_noise", "pixelate"], severities=(1, 5), seed=0)
    model = create_model("small_cnn", 10, in_channels=1)
    res = evaluate_corruptions(model, bench, clean=(x, y), batch_size=5)
    assert set(res.errors) == {"gaussian_noise", "pixelate"} and res.severities == [1, 5]
    assert 0.0 <= res.mean_corruption_error <= 1.0 and res.clean_error is not None


def test_real_diffaug_ensemble_plugs_in(tmp_path):
    diffaug = pytest.importorskip("robaug.transforms.diffaug")
    from robaug.diffusion import CallableDenoiser

    _write_cifar_c(tmp_path)

    def to_class_3(x, sigma, labels):  # every denoised view encodes class 3 (x0_hat in [-1, 1])
        return torch.full_like(x, 2 * 3 * STEP / 255 - 1)

    den = CallableDenoiser(to_class_3, in_channels=3)
    # raw view + two denoised views: averaged softmaxes of one-hot logits always favour class 3,
    # so only the label-3 image of every 10 is right
    res = evaluate_corruptions(PixelClassifier(), tmp_path, denoiser=den, ensemble_timesteps=[0, 100, 200])
    assert all(e == pytest.approx(0.9) for by in res.errors.values() for e in by.values())
    # with t = 0 only, DE is the classifier itself
    raw = evaluate_corruptions(PixelClassifier(), tmp_path, denoiser=den, ensemble_timesteps=[0])
    assert raw.errors == evaluate_corruptions(PixelClassifier(), tmp_path).errors
    assert isinstance(diffaug.DiffAugEnsemble, type)


def test_requested_corruptions_missing_from_either_layout_are_named(tmp_path):
    npy_root, folder_root, empty = tmp_path / "c10c", tmp_path / "inc", tmp_path / "empty"
    _write_cifar_c(npy_root)
    assert NpyCorruptionBenchmark(npy_root, corruptions=["contrast"]).corruptions == ["contrast"]
    with pytest.raises(FileNotFoundError, match=r"no snow\.npy, zoom_blur\.npy in"):
        NpyCorruptionBenchmark(npy_root, corruptions=["fog", "snow", "zoom_blur"])
    (folder_root / "fog" / "1" / "n0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no folder snow/ in"):
        ImageFolderCorruptionBenchmark(folder_root, corruptions=["fog", "snow"])
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no <corruption>/<severity>/ folders in"):
        ImageFolderCorruptionBenchmark(empty)


def test_old_module_path_warns_and_resolves():
    from robaug.eval import benchmarks

    with pytest.warns(FutureWarning, match=r"robaug\.eval\.benchmarks\.evaluate_corruptions moved: "
                                           r".*robaug\.eval\.evaluation.*0\.3\.0"):
        old = benchmarks.evaluate_corruptions
    assert old is evaluate_corruptions
    with pytest.raises(AttributeError):
        benchmarks.no_such_name
