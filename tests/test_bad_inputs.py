"""A bad input or setting is named, never turned into a wrong result: a table of bad calls across the transforms,
samplers, losses, hub, evaluation and every CLI command, each with the error type it must raise and a pattern its
message must contain (the argument's name, usually)."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import pytest
import torch

import robaug
from robaug.diffusion import CallableDenoiser

NAN, INF = math.nan, math.inf


def _tiny_denoiser():
    return CallableDenoiser(lambda x, s, y=None: x * 0, in_channels=1, sample_size=8, num_classes=3, null_label=3,
                            sigma_min=0.01, sigma_max=20.0)


def _u8(b=2, c=1, s=28):
    return torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _model(c=1, k=10):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(k))


def _fmnist_ddpm():
    return robaug.load_denoiser("fmnist-ddpm")


# (id, call, exception type, regex the message must match)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # --- IPMix
    ("ipmix-numpy", lambda: robaug.IPMix()(np.zeros((28, 28, 1), np.uint8)), TypeError, r"numpy|ndarray"),
    ("ipmix-numpy-pair", lambda: robaug.IPMix()((np.zeros((1, 28, 28), np.float32), 3)), TypeError, r"numpy|ndarray"),
    ("ipmix-list", lambda: robaug.IPMix()([0.1, 0.2, 0.3]), TypeError, r"list"),
    ("ipmix-width0", lambda: robaug.IPMix(width=0), ValueError, r"width"),
    ("ipmix-depth-neg", lambda: robaug.IPMix(depth=-1), ValueError, r"depth"),
    ("ipmix-views0", lambda: robaug.IPMix(num_views=0), ValueError, r"num_views"),
    ("ipmix-severity", lambda: robaug.IPMix(severity=50), ValueError, r"severity"),
    ("ipmix-severity-nan", lambda: robaug.IPMix(severity=NAN), ValueError, r"severity"),
    ("ipmix-beta", lambda: robaug.IPMix(beta=0), ValueError, r"beta"),
    ("ipmix-beta-nan", lambda: robaug.IPMix(beta=NAN), ValueError, r"beta"),
    ("ipmix-partner", lambda: robaug.IPMix(partner_aug_prob=1.5), ValueError, r"partner_aug_prob"),
    ("ipmix-patch", lambda: robaug.IPMix(patch_sizes=[0.0]), ValueError, r"patch_sizes"),
    ("ipmix-chain", lambda: robaug.IPMix(chain_types=["pixel"]), ValueError, r"chain_types"),
    ("ipmix-preset", lambda: robaug.IPMix(preset="svhn"), ValueError, r"preset"),
    ("ipmix-generator", lambda: robaug.IPMix(generator=0), TypeError, r"generator"),
    ("ipmix-nan-image", lambda: robaug.IPMix()(torch.full((1, 3, 8, 8), NAN)), ValueError, r"NaN|finite"),
    ("ipmix-range", lambda: robaug.IPMix()(torch.full((1, 3, 8, 8), 2.0)), ValueError, r"\[0, 1\]|range"),
    ("ipmix-channels", lambda: robaug.IPMix()(torch.zeros(1, 5, 8, 8)), ValueError, r"channel"),
    ("ipmix-tiny", lambda: robaug.IPMix()(torch.zeros(1, 3, 1, 1)), ValueError, r"size|small|pixels"),
    ("ipmix-empty", lambda: robaug.IPMix()(torch.zeros(0, 3, 8, 8)), ValueError, r"empty"),
    ("ipmix-int32", lambda: robaug.IPMix()(torch.zeros(1, 3, 8, 8, dtype=torch.int32)), (TypeError, ValueError), r"dtype|int32"),
    # --- DiffAug / DiffAugEnsemble
    ("diffaug-numpy", lambda: robaug.DiffAug(_fmnist_ddpm())(np.zeros((1, 28, 28), np.float32)), TypeError, r"numpy|ndarray"),
    ("diffaug-list", lambda: robaug.DiffAug(_fmnist_ddpm())([0.5] * 10), TypeError, r"list"),
    ("diffaug-trange", lambda: robaug.DiffAug(_fmnist_ddpm(), t_range=(500, 100)), ValueError, r"t_range"),
    ("diffaug-trange-high", lambda: robaug.DiffAug(_fmnist_ddpm(), t_range=(0, 5000)), ValueError, r"t_range"),
    ("diffaug-t", lambda: robaug.DiffAug(_fmnist_ddpm(), t=-1), ValueError, r"\bt\b"),
    ("diffaug-p", lambda: robaug.DiffAug(_fmnist_ddpm(), p=1.5), ValueError, r"\bp\b"),
    ("diffaug-p-nan", lambda: robaug.DiffAug(_fmnist_ddpm(), p=NAN), ValueError, r"\bp\b"),
    ("diffaug-pad", lambda: robaug.DiffAug(_fmnist_ddpm(), pad_mode="zeros"), ValueError, r"pad_mode"),
    ("diffaug-model-name", lambda: robaug.DiffAug("no-such-model"), (KeyError, ValueError, FileNotFoundError), r"no-such-model"),
    ("diffaug-model-type", lambda: robaug.DiffAug(42), TypeError, r"denoiser"),
    ("diffaug-channels", lambda: robaug.DiffAug(_fmnist_ddpm())(torch.zeros(1, 5, 28, 28)), ValueError, r"channel"),
    ("diffaug-nan", lambda: robaug.DiffAug(_fmnist_ddpm())(torch.full((1, 1, 28, 28), NAN)), ValueError, r"NaN|finite"),
    ("diffaug-micro", lambda: robaug.DiffAug(_fmnist_ddpm(), micro_batch=0), ValueError, r"micro_batch"),
    ("de-timesteps-empty", lambda: robaug.DiffAugEnsemble(_model(), _fmnist_ddpm(), timesteps=[]), ValueError, r"timesteps"),
    ("de-timesteps-range", lambda: robaug.DiffAugEnsemble(_model(), _fmnist_ddpm(), timesteps=[0, 5000]), ValueError, r"timesteps"),
    # --- samplers
    ("gd-steps", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), num_steps=0), ValueError, r"num_steps"),
    ("gd-solver", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), solver="rk4"), ValueError, r"solver"),
    ("gd-cfg-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), cfg_scale=NAN), ValueError, r"cfg_scale"),
    ("gd-cfg-inf", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), cfg_scale=INF), ValueError, r"cfg_scale"),
    ("gd-snoise-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), s_churn=10, s_noise=NAN), ValueError, r"s_noise"),
    ("gd-churn-neg", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), s_churn=-1), ValueError, r"s_churn"),
    ("gd-churn-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), s_churn=NAN), ValueError, r"s_churn"),
    ("gd-rho0", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), rho=0), ValueError, r"rho"),
    ("gd-rho-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), rho=NAN), ValueError, r"rho"),
    ("gd-sigma-order", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), sigma_min=5.0, sigma_max=1.0), ValueError, r"sigma_m"),
    ("gd-sigma-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), sigma_max=NAN), ValueError, r"sigma_max"),
    ("gd-eta-heun", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), eta=0.5), ValueError, r"eta"),
    ("gd-eta-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), solver="ddim", eta=NAN), ValueError, r"eta"),
    ("gd-clf-scale-nan", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), classifier=_model(1, 3), classifier_scale=NAN), ValueError, r"classifier_scale"),
    ("gd-clf-mode", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), classifier=_model(1, 3), classifier_mode="zz"), ValueError, r"classifier_mode"),
    ("gd-denoiser-type", lambda: robaug.GuidedDiffusion(42), TypeError, r"denoiser"),
    ("gd-label-range", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), num_steps=2)(class_labels=[7]), ValueError, r"class_labels|label"),
    ("gd-seeds-and-gen", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), num_steps=2)([0], seeds=[1], generator=torch.Generator()), ValueError, r"seeds|generator"),
    ("gd-noise-shape", lambda: robaug.GuidedDiffusion(_tiny_denoiser(), num_steps=2).sample([0], noise=torch.zeros(1, 1, 4, 4)), ValueError, r"noise"),
    ("cg-scale-nan", lambda: robaug.ContrastiveGuidedSampler(_tiny_denoiser(), _model(1, 3), contrastive_scale=NAN), ValueError, r"contrastive_scale"),
    ("cg-loss", lambda: robaug.ContrastiveGuidedSampler(_tiny_denoiser(), _model(1, 3), contrastive_loss="ntxent"), ValueError, r"contrastive_loss"),
    ("cg-tau", lambda: robaug.ContrastiveGuidedSampler(_tiny_denoiser(), _model(1, 3), tau=0), ValueError, r"tau"),
    ("cg-head-lr-nan", lambda: robaug.ContrastiveGuidedSampler(_tiny_denoiser(), _model(1, 3), head_lr=NAN), ValueError, r"head_lr"),
    ("karras-rho0", lambda: robaug.diffusion.schedule.karras_sigmas(10, 0.002, 80.0, rho=0), ValueError, r"rho"),
    ("karras-n0", lambda: robaug.diffusion.schedule.karras_sigmas(0, 0.002, 80.0), ValueError, r"\bn\b|steps"),
    ("karras-order", lambda: robaug.diffusion.schedule.karras_sigmas(10, 80.0, 0.002), ValueError, r"sigma_m"),
    # --- losses
    ("jsd-splits", lambda: robaug.JSDLoss(num_splits=1), ValueError, r"num_splits"),
    ("jsd-weight-nan", lambda: robaug.JSDLoss(weight=NAN), ValueError, r"weight"),
    ("jsd-batch", lambda: robaug.JSDLoss()(torch.zeros(4, 10), torch.zeros(2, dtype=torch.long)), ValueError, r"split|batch|3"),
    ("trades-eps-neg", lambda: robaug.TRADESLoss(eps=-0.1), ValueError, r"eps"),
    ("trades-eps-nan", lambda: robaug.TRADESLoss(eps=NAN), ValueError, r"eps"),
    ("trades-norm", lambda: robaug.TRADESLoss(norm="l1"), ValueError, r"norm"),
    ("trades-steps", lambda: robaug.TRADESLoss(steps=-1), ValueError, r"steps"),
    ("trades-bn", lambda: robaug.TRADESLoss(bn_mode="frozen"), ValueError, r"bn_mode"),
    ("trades-uint8", lambda: robaug.trades_loss(_model(), _u8(), torch.zeros(2, dtype=torch.long)), (TypeError, ValueError), r"float|dtype"),
    ("diffaug-loss-uint8", lambda: robaug.diffaug_loss(_model(), _u8(), torch.zeros(2, dtype=torch.long), robaug.DiffAug(_fmnist_ddpm())), (TypeError, ValueError), r"float|dtype"),
    # --- hub
    ("hub-unknown", lambda: robaug.load_denoiser("definitely-not-a-model"), (KeyError, ValueError, FileNotFoundError), r"definitely-not-a-model"),
    ("hub-pickle", lambda: robaug.load_denoiser(_write("model.pt", b"\x80\x04K\x01.")), ValueError, r"pickle|safetensors|convert"),
    ("hub-download-unknown", lambda: robaug.download_weights("nope-model"), (KeyError, ValueError), r"nope-model"),
    # --- evaluation
    ("corrupt-name", lambda: robaug.eval.corrupt(_u8(), "rain", 3), ValueError, r"rain"),
    ("corrupt-severity", lambda: robaug.eval.corrupt(_u8(), "fog", 6), ValueError, r"severity"),
    ("corrupt-severity0", lambda: robaug.eval.corrupt(_u8(), "fog", 0), ValueError, r"severity"),
    ("corrupt-numpy", lambda: robaug.eval.corrupt(np.zeros((1, 28, 28), np.uint8), "fog", 1), TypeError, r"numpy|ndarray"),
    ("corrupt-nan", lambda: robaug.eval.corrupt(torch.full((1, 1, 28, 28), NAN), "fog", 1), ValueError, r"NaN|finite"),
    ("corrupted-set-names", lambda: robaug.eval.make_corrupted_dataset(_u8(), torch.zeros(2), ["snowfall"]), ValueError, r"snowfall"),
    ("pgd-eps-neg", lambda: robaug.eval.pgd_accuracy(_model(), _u8().float() / 255, torch.zeros(2, dtype=torch.long), eps=-1), ValueError, r"eps"),
    ("pgd-norm", lambda: robaug.eval.pgd_accuracy(_model(), _u8().float() / 255, torch.zeros(2, dtype=torch.long), eps=0.1, norm="l0"), ValueError, r"norm"),
    ("pgd-labels", lambda: robaug.eval.pgd_accuracy(_model(), _u8().float() / 255, torch.zeros(3, dtype=torch.long), eps=0.1), ValueError, r"labels"),
    ("pgd-range", lambda: robaug.eval.pgd_accuracy(_model(), _u8().float(), torch.zeros(2, dtype=torch.long), eps=0.1), ValueError, r"\[0, 1\]|range"),
    # --- models
    ("model-unknown", lambda: robaug.models.create_model("resnet1000", 10), (KeyError, ValueError), r"resnet1000"),
    ("model-classes", lambda: robaug.models.create_model("small_cnn", 0), ValueError, r"num_classes"),
]


def _write(name: str, data: bytes) -> str:
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    (d / name).write_bytes(data)
    return str(d / name)


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named(call, exc, pattern):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value.args[0]) if isinstance(info.value, KeyError) and info.value.args else str(info.value)
    assert re.search(pattern, msg), f"message does not name the problem ({pattern!r}): {msg}"


# --- every CLI command: a user error exits 2 with one line naming the flag, no traceback
CLI_CASES = [
    ("train-model", ["train", "--model", "resnet1000", "--steps", "1"], r"resnet1000"),
    ("train-recipe", ["train", "--recipe", "cutmix", "--steps", "1"], r"cutmix|recipe"),
    ("train-preset", ["train", "--preset", "nope"], r"preset|nope"),
    ("train-lr-nan", ["train", "--lr", "nan", "--steps", "1"], r"lr"),
    ("train-batch", ["train", "--batch-size", "0", "--steps", "1"], r"batch"),
    ("train-amp", ["train", "--amp", "fp8", "--steps", "1"], r"amp"),
    ("train-device", ["train", "--device", "cuda", "--steps", "1"] if not torch.cuda.is_available() else
     ["train", "--device", "tpu", "--steps", "1"], r"cuda|CUDA|device"),
    ("train-data-root", ["train", "--dataset", "cifar10", "--data-root", "/nonexistent/robaug", "--steps", "1"], r"data|/nonexistent"),
    ("generate-cfg-nan", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "10", "--cfg-scale", "nan"], r"cfg.scale"),
    ("generate-model", ["generate", "--model", "no-such-model", "--out", "{tmp}/g", "--num-samples", "10"], r"no-such-model"),
    ("generate-import-spec", ["generate", "--model", "os:getcwd", "--out", "{tmp}/g", "--num-samples", "10"], r"os:getcwd|Denoiser"),
    ("generate-classes", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "10", "--num-classes", "12"], r"num.classes|12"),
    ("generate-samples", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "0"], r"num.samples"),
    ("generate-steps", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "10", "--steps", "0"], r"steps"),
    ("generate-rho", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "10", "--rho", "0"], r"rho"),
    ("generate-keep", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/g", "--num-samples", "10", "--keep-fraction", "2"], r"keep.fraction"),
    ("generate-out-file", ["generate", "--model", "fmnist-ddpm", "--out", "{tmp}/afile", "--num-samples", "10"], r"out|afile"),
    ("download-unknown", ["download", "nope-model"], r"nope-model"),
    ("demo-denoiser", ["demo", "--denoiser", "no-such-model", "--no-compare", "--out", "{tmp}/d"], r"no-such-model"),
    ("demo-timesteps", ["demo", "--timesteps", "a,b", "--no-compare", "--out", "{tmp}/d"], r"timesteps"),
]


@pytest.mark.parametrize("argv", [c[1] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_exits_2_with_one_line(argv, tmp_path, capsys, monkeypatch):
    from robaug.cli import main

    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    pattern = dict((tuple(c[1]), c[2]) for c in CLI_CASES)[tuple(a.replace(str(tmp_path), "{tmp}") for a in argv)]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, f"exit code {rc}; stderr: {err[-500:]}"
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert re.search(pattern, last), f"the error line does not name the problem ({pattern!r}): {last}"
