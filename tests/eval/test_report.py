"""The robustness report end to end on a tiny model (seconds): report.json content, intervals, resumption, the
`robaug eval` command on a `robaug train`-style run folder."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robaug.eval import report_suites
from robaug.eval.report import SUITES, report

SETTINGS = dict(clean_images=120, corruption_images=30, corruptions=["gaussian_noise", "brightness"],
                severities=[1, 3], adv_images=20, pgd_steps=2, cert_images=4, cert_n0=10, cert_n=60,
                cert_sigmas=[0.25], cert_radii=[0.0, 0.1], ood_images=40, ood_sets=["digits", "uniform", "blobs"],
                n_boot=20, batch_size=64)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (150,), generator=g)
    x = (torch.rand(150, 1, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.25) * 255
    return x.round().to(torch.uint8), y


def _check_num(d: dict) -> None:
    lo, hi = d["ci95"]
    assert lo <= d["value"] + 1e-9 and d["value"] <= hi + 1e-9, d


def test_report_end_to_end_and_resume(tmp_path, monkeypatch) -> None:
    model = Tiny()
    x, y = _data()
    out = tmp_path / "rep"
    doc = report(model, (x, y), out=out, quick=True, settings=SETTINGS, progress=False)
    assert list(doc["suites"]) == list(SUITES) and doc["reused_suites"] == []
    stored = json.loads((out / "report.json").read_text())
    assert stored["settings"]["cert_n"] == 60 and stored["settings"]["pgd_eps"] == pytest.approx(4 / 255)
    s = stored["suites"]
    with torch.no_grad():
        direct = (model(x[:120].float() / 255).argmax(1) == y[:120]).double().mean().item()
    assert s["clean"]["accuracy"]["value"] == pytest.approx(direct)
    assert s["clean"]["accuracy"]["n"] == 120 and s["clean"]["accuracy"]["interval"] == "wilson"
    _check_num(s["clean"]["accuracy"])
    assert set(s["corruptions"]["per_set"]) == {"gaussian_noise", "brightness"}
    assert set(s["corruptions"]["per_set"]["brightness"]) == {"1", "3"}
    _check_num(s["corruptions"]["mean_accuracy"])
    assert s["adversarial"]["pgd_accuracy"]["value"] <= s["adversarial"]["clean_accuracy"]["value"]
    cert = s["certified"]["per_sigma"]["0.25"]
    assert cert["certified_accuracy"]["0.1"]["value"] <= cert["certified_accuracy"]["0.0"]["value"]
    for m in ("msp", "max_logit", "energy"):
        per = s["ood"]["methods"][m]["per_set"]
        assert set(per) == {"digits", "uniform", "blobs"} and per["digits"]["kind"] == "near"
        for r in per.values():
            assert r["auroc"]["interval"] == "bootstrap"
            _check_num(r["auroc"])
    cal = s["calibration"]
    for part in ("clean", "corrupted"):
        for k in ("ece", "rms", "nll", "brier"):
            _check_num(cal[part][k])
    assert cal["corrupted"]["ece"]["n"] == 30 * 2 * 2
    # per-corruption calibration (severities pooled) re-computed from the same -C set, and its mean
    from robaug.eval.calibration import calibration_metrics
    from robaug.eval.corruptions import make_corrupted_dataset

    mc = cal["corrupted_mean_over_corruptions"]
    bench = make_corrupted_dataset(x[:30], y[:30], ["brightness"], [1, 3], seed=0)
    xb = torch.cat([bench.images("brightness", s) for s in (1, 3)]).float() / 255
    with torch.no_grad():
        probs = torch.softmax(model(xb).double(), 1)
    ref = calibration_metrics(probs, y[:30].repeat(2))
    assert mc["per_corruption"]["brightness"]["ece"] == pytest.approx(ref["ece"], abs=1e-9)
    assert mc["per_corruption"]["brightness"]["rms"] == pytest.approx(ref["rms"], abs=1e-9)
    assert mc["ece"]["value"] == pytest.approx(sum(v["ece"] for v in mc["per_corruption"].values()) / 2)
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert (out / "report.json").stat().st_mode & 0o777 == 0o666 & ~mask  # the user's umask, not mkstemp's 0600
    md = (out / "report.md").read_text()
    assert "| clean | accuracy |" in md and "Floating-point caveat" in md
    for f in doc["figures"].values():
        assert (out / f).is_file()

    # a second call with the same settings reuses every suite: the runners must not be called
    def boom(ctx):
        raise AssertionError("recomputed a finished suite")

    for k in SUITES:
        monkeypatch.setitem(report_suites.RUNNERS, k, boom)
    doc2 = report(model, (x, y), out=out, quick=True, settings=SETTINGS, progress=False)
    assert doc2["reused_suites"] == list(SUITES)
    assert doc2["suites"]["ood"] == doc["suites"]["ood"]
    # another certification setting or a denoiser recomputes only that suite; other weights recompute everything
    from robaug.diffusion import CallableDenoiser

    monkeypatch.setitem(report_suites.RUNNERS, "certified", lambda ctx: {"per_sigma": {}, "denoised": False,
                                                                          "note": "stub"})
    doc3 = report(model, (x, y), out=out, quick=True, settings={**SETTINGS, "cert_n": 80}, progress=False,
                  suites=("clean", "certified"), figures=False)
    assert doc3["reused_suites"] == ["clean"]
    doc3 = report(model, (x, y), out=out, quick=True, settings={**SETTINGS, "cert_n": 80}, progress=False,
                  suites=("clean", "certified"), figures=False,
                  denoiser=CallableDenoiser(lambda z, s, lab: z, in_channels=1))
    assert doc3["reused_suites"] == ["clean"]
    with torch.no_grad():
        model.fc.bias += 1.0
    with pytest.raises(AssertionError, match="recomputed"):
        report(model, (x, y), out=out, settings=SETTINGS, progress=False, suites=("clean",))


def test_report_errors(tmp_path) -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="suites"):
        report(Tiny(), (x, y), out=tmp_path, suites=("clean", "robustness"))
    class Scalar(nn.Module):
        def forward(self, t):
            return t.mean((1, 2, 3))

    with pytest.raises(ValueError, match="logits"):
        report(Scalar(), (x, y), out=tmp_path, suites=("clean",), settings=SETTINGS, progress=False)
    with pytest.raises(ValueError, match="classes"):  # 2 logits for labels 0..2
        report(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), (x, y), out=tmp_path, suites=("clean",),
               settings=SETTINGS, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        report(Tiny(), (x.float() * 2, y), out=tmp_path, suites=("clean",), settings=SETTINGS, progress=False)
    with pytest.raises(ValueError, match="labels"):
        report(Tiny(), (x, y[:5]), out=tmp_path, suites=("clean",), settings=SETTINGS, progress=False)


def test_robaug_eval_cli_on_a_run_folder(tmp_path, capsys) -> None:
    from safetensors.torch import save_file

    from robaug.cli import main
    from robaug.data.datasets import load_dataset
    from robaug.recipes.train import TrainConfig, build_model

    try:
        _, info = load_dataset("fashion_mnist", train=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(dataset="fashion_mnist", model="small_cnn", model_kwargs={"width": 4}, out_dir=str(run))
    torch.manual_seed(0)
    model = build_model(cfg, info)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    rc = main(["eval", str(run), "--suites", "clean,certified", "--quick", "--no-progress", "--device", "cpu",
               "--set", "clean_images=64", "--set", "cert_images=2", "--set", "cert_n=50", "--set", "cert_n0=5"])
    assert rc == 0 and "report.md" in capsys.readouterr().out
    doc = json.loads((run / "report" / "report.json").read_text())
    assert doc["dataset"] == "fashion_mnist" and doc["settings"]["cert_n"] == 50
    assert doc["suites"]["clean"]["accuracy"]["n"] == 64
    assert main(["eval", str(run), "--suites", "clean,nope"]) == 2  # one line naming the suite, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--suites" in err[0] and "nope" in err[0]
