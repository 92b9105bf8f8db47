"""robaug.recipes.config and the robaug train flags: presets, overrides and value parsing."""

from __future__ import annotations

import pytest

from robaug.cli.train import config_from_args
from robaug.recipes.config import PRESETS
from robaug.recipes.train import TrainConfig


def test_cli_preset_and_overrides():
    cfg = config_from_args(["--preset", "cifar-wrn40-4", "--dataset", "cifar10", "--recipe", "ipmix_jsd",
                            "--lr", "0.05", "--no-resume", "--de-timesteps", "0:500:100", "--model-kwargs",
                            '{"dropout": 0.1}', "--diffaug-t-range", "0,500", "--corruptions", "fog,contrast"])
    assert cfg.model == PRESETS["cifar-wrn40-4"]["model"] == "wrn_40_4"
    assert cfg.lr == 0.05 and cfg.weight_decay == 5e-4 and cfg.resume is False and cfg.recipe == "ipmix_jsd"
    assert cfg.de_timesteps == [0, 100, 200, 300, 400] and cfg.model_kwargs == {"dropout": 0.1}
    assert cfg.diffaug_t_range == (0, 500) and cfg.corruptions == ["fog", "contrast"]
    with pytest.raises(SystemExit):
        config_from_args(["--recipe", "mixup"])
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")


def test_cli_flags_and_presets():
    cfg = config_from_args(["--recipe", "trades", "--trades-eps", "8/255", "--trades-step-size", "2/255",
                            "--trades-norm", "l2", "--eval-pgd", "8/255,20", "--eval-autoattack", "0.5",
                            "--eval-autoattack-attacks", "apgd-ce,apgd-t", "--synthetic-data", "x.npz",
                            "--synthetic-fraction", "0.8"])
    assert cfg.trades_eps == pytest.approx(8 / 255) and cfg.trades_step_size == pytest.approx(2 / 255)
    assert cfg.eval_pgd == (pytest.approx(8 / 255), 20) and cfg.eval_autoattack == 0.5
    assert cfg.eval_autoattack_attacks == ["apgd-ce", "apgd-t"] and cfg.synthetic_fraction == 0.8
    assert cfg.trades_norm == "l2" and cfg.to_dict()["eval_pgd"] == [pytest.approx(8 / 255), 20]
    p = config_from_args(["--preset", "cifar10-trades-wrn28-10"])
    assert (p.recipe, p.batch_size, p.lr, p.trades_beta, p.label_smoothing, p.ema_decay, p.synthetic_fraction) == (
        "trades", 512, 0.2, 5.0, 0.1, 0.995, 0.7)
    assert PRESETS["fmnist-trades-cpu"]["recipe"] == "trades"
    with pytest.raises(SystemExit):
        config_from_args(["--eval-pgd", "0.1"])
    with pytest.raises(ValueError, match="synthetic_fraction"):
        TrainConfig(synthetic_fraction=1.0)
    with pytest.raises(ValueError, match="trades_bn"):
        TrainConfig(trades_bn="frozen")


@pytest.mark.parametrize("field,value,flag", [
    ("batch_size", 0, "--batch-size"), ("batch_size", 2.5, "--batch-size"), ("lr", float("nan"), "--lr"),
    ("lr", -0.1, "--lr"), ("steps", 0, "--steps"), ("epochs", 0, "--epochs"),
])
def test_config_rejects_values_that_cannot_train(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**{field: value})


def test_demo_names_a_bad_timesteps_value():
    from argparse import Namespace

    from robaug.demo import run

    with pytest.raises(ValueError, match="--timesteps"):
        run(Namespace(timesteps="a,b", out="unused", denoiser="fmnist-ddpm", data_root=None, batch_size=4, seed=0,
                      device="cpu", compare=False, compare_recipes="baseline", compare_steps=1))


def test_demo_without_matplotlib_says_so_before_training_and_skips_only_the_figure(tmp_path, monkeypatch, capsys):
    """`robaug demo` without the recipes extra: the note comes before the (minutes-long) comparison starts, which
    then runs without a figure instead of crashing at the end."""
    import importlib.util

    import robaug.recipes
    from robaug.cli.demo import build_parser
    from robaug.demo import run

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    seen = {}

    def compare(recipes, **kw):  # records what the demo asks for; the comparison itself is tested in test_compare
        seen.update(kw, recipes=recipes, note_before=capsys.readouterr().err)
        return {"rows": [], "figure": None}

    monkeypatch.setattr(robaug.recipes, "quick_compare", compare)
    args = build_parser().parse_args(["--out", str(tmp_path), "--batch-size", "4", "--timesteps", "100",
                                      "--compare-steps", "1"])
    run(args)
    assert seen["plot"] is None and seen["recipes"] == ["baseline", "diffaug"]
    assert "matplotlib is not installed" in seen["note_before"]
