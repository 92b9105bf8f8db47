"""OOD scores and metrics against scikit-learn and direct formulas; the offline OOD sets and the folder reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robaug.eval.ood import ood_metrics, ood_scores
from robaug.eval.ood_sets import blobs_ood, digits_ood, load_ood_folder, noise_ood, offline_ood_sets, photo_crops_ood


def _sk(scores_in, scores_out):
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
    s = np.r_[scores_in, scores_out]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"auroc": roc_auc_score(y, s), "aupr_in": average_precision_score(y, s),
            "aupr_out": average_precision_score(1 - y, -s), "fpr95": fpr[np.argmax(tpr >= 0.95)]}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(tied: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 1.0, 300 + 37 * seed)
    b = rng.normal(0.0, 1.3, 500 - 50 * seed)
    if tied:  # heavy ties, also across the two sets
        a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
    got = ood_metrics(torch.from_numpy(a), b)
    ref = _sk(a, b)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k


def test_metrics_extremes_and_errors() -> None:
    m = ood_metrics([3.0, 4.0], [1.0, 2.0])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    assert ood_metrics([1.0, 1.0], [1.0, 1.0])["auroc"] == 0.5
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="1-d"):
        ood_metrics(np.zeros((3, 2)), [0.0])
    with pytest.raises(ValueError, match="empty"):
        ood_metrics([], [0.0])
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            ood_metrics(torch.zeros(3, device="cuda"), torch.zeros(3))
    meta = torch.zeros(3, device="meta")
    with pytest.raises(ValueError, match="device"):
        ood_metrics(meta, torch.zeros(3))


class Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(x.flatten(1)) * 3


def test_scores_match_formulas() -> None:
    model = Lin()
    x = torch.rand(10, 1, 4, 4)
    z = model(x).detach().double()
    torch.testing.assert_close(ood_scores(model, x, "msp", batch_size=3), torch.softmax(z, 1).amax(1))
    torch.testing.assert_close(ood_scores(model, x, "msp", temperature=2.0), torch.softmax(z / 2, 1).amax(1))
    torch.testing.assert_close(ood_scores(model, x, "max_logit"), z.amax(1))
    torch.testing.assert_close(ood_scores(model, x, "energy", temperature=2.0), 2 * torch.logsumexp(z / 2, 1))
    # ODIN: the perturbation raises the (temperature-scaled) max softmax of every image
    odin = ood_scores(model, x, "odin", odin_eps=0.01)
    plain = ood_scores(model, x, "msp", temperature=1000.0)
    assert (odin >= plain).all() and (odin > plain).any()
    # by hand: x - eps sign(grad of -log softmax_yhat(z / T))
    xr = x.clone().requires_grad_(True)
    zz = model(xr) / 1000.0
    torch.nn.functional.cross_entropy(zz, zz.argmax(1), reduction="sum").backward()
    ref = torch.softmax(model(x - 0.01 * xr.grad.sign()).double() / 1000.0, 1).amax(1)
    torch.testing.assert_close(odin, ref.detach(), rtol=1e-5, atol=1e-7)


def test_scores_errors() -> None:
    with pytest.raises(ValueError, match="logits"):
        ood_scores(lambda t: t.sum((1, 2, 3)), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ood_scores(Lin(), torch.rand(2, 1, 4, 4) * 5)
    with pytest.raises(ValueError, match="method"):
        ood_scores(Lin(), torch.rand(2, 1, 4, 4), "mahalanobis")


def test_offline_sets() -> None:
    d = digits_ood(28, 1)
    assert d.images.shape == (1797, 1, 28, 28) and d.kind == "near"
    assert 0 <= float(d.images.min()) and float(d.images.max()) <= 1 and float(d.images.max()) > 0.9
    d3 = digits_ood(32, 3, n=5)
    assert d3.images.shape == (5, 3, 32, 32) and d3.kind == "far"  # digits are far from colour photographs
    p = photo_crops_ood(20, 28, 3, seed=1)
    assert p.images.shape == (20, 3, 28, 28) and p.kind == "far"
    assert torch.equal(p.images, photo_crops_ood(20, 28, 3, seed=1).images)
    u = noise_ood("uniform", 50, 16, 1, seed=0)
    assert abs(float(u.images.mean()) - 0.5) < 0.02
    b = blobs_ood(10, 32, 3, seed=0)
    nz = b.images[b.images > 0]
    assert float(nz.min()) >= 0.75 and 0.05 < float((b.images > 0).float().mean()) < 0.9
    sets = offline_ood_sets(28, 1, n=8)
    assert list(sets) == ["digits", "photo_crops", "uniform", "gaussian", "blobs"]
    assert all(s.images.shape[1:] == (1, 28, 28) for s in sets.values()) and len(sets["uniform"]) == 8


def test_load_ood_folder(tmp_path) -> None:
    from PIL import Image

    arr = (np.random.default_rng(0).random((5, 28, 28)) * 255).astype(np.uint8)
    np.save(tmp_path / "set.npy", arr)
    s = load_ood_folder(tmp_path / "set.npy", size=28, channels=1)
    assert s.images.shape == (5, 1, 28, 28)
    torch.testing.assert_close(s.images[:, 0], torch.from_numpy(arr).float() / 255)
    (tmp_path / "tree" / "classA").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "tree" / "classA" / f"{i}.png")
    with pytest.raises(ValueError, match="32x32.*28x28.*resize=True"):
        load_ood_folder(tmp_path / "tree", size=28, channels=1)
    s2 = load_ood_folder(tmp_path / "tree", size=28, channels=1, resize=True)
    assert s2.images.shape == (3, 1, 28, 28)
    torch.testing.assert_close(s2.images[:, 0, 5, 5], torch.tensor([0.0, 40.0, 80.0]) / 255, atol=2 / 255, rtol=0)
    with pytest.raises(ValueError, match="resize"):
        load_ood_folder(tmp_path / "set.npy", size=32)
    with pytest.raises(FileNotFoundError):
        load_ood_folder(tmp_path / "missing")
