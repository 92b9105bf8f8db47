"""robaug.cli: every command's help names itself, user errors end in one line with exit status 2 (``--debug`` shows
the traceback), the light commands never import torch, ``python -m robaug`` and a closed pipe work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _paths import subprocess_env

from robaug.cli import COMMANDS, main

LIGHT = {"--help": ["--help"], "list": ["list"], "download --help": ["download", "--help"]}


def _env() -> dict[str, str]:
    env = subprocess_env()
    env.pop("ROBAUG_DEBUG", None)
    return env


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["demo", "list", "download", "train", "generate"])
def test_each_command_help_names_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: robaug {command} ")
    assert "``" not in out and ":class:" not in out and ":func:" not in out  # no reStructuredText markup
    assert "examples/" not in out and ".py " not in out  # examples that work from an installed wheel


@pytest.mark.parametrize("command", ["demo", "train", "download"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: " in out
    if command == "train":
        assert "(default: 128)" in out and "(default: baseline)" in out  # TrainConfig's batch_size and recipe


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: robaug ")
    for name in COMMANDS:
        assert f"    {name} " in out


@pytest.mark.parametrize("name", list(LIGHT))
def test_light_commands_do_not_import_torch(name):
    code = ("import sys\nfrom robaug.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nheavy = [m for m in ('torch', 'torchvision', 'kornia', 'diffusers', 'numpy') if m in "
            "sys.modules]\nprint('HEAVY', heavy, rc, file=sys.stderr)")
    r = _python(code, *LIGHT[name])
    assert "HEAVY [] 0" in r.stderr, r.stderr[-2000:]


def test_python_dash_m_robaug_list():
    r = subprocess.run([sys.executable, "-m", "robaug", "list"], env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "fmnist-ddpm" in r.stdout.split(), r.stderr


def test_list_into_a_closed_pipe_ends_without_a_traceback():
    """`robaug list | head -1`: the reader goes away after one line."""
    cmd = f"{sys.executable} -m robaug list | head -1"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=_env(), capture_output=True, text=True, timeout=120)
    from robaug.hub import list_pretrained

    assert r.stdout.strip() == list_pretrained()[0]
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_unknown_command_and_missing_modules_are_one_line_errors(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'train'" in err[0]
    assert main([]) == 2
    assert "choose a COMMAND" in capsys.readouterr().err
    for name in ("eval", "convert"):  # wired to modules other branches add; absent ones say so in one line
        if COMMANDS[name].load() is None:
            assert main([name]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "not available" in err[0]


def _train_error(capsys, tmp_path, *args: str, debug: bool = False) -> str:
    argv = ["train", "--no-progress", "--no-eval-corruptions", "--out-dir", str(tmp_path / "run"), *args]
    status = main((["--debug"] if debug else []) + argv)
    err = capsys.readouterr().err
    assert status == 2, err
    return err


def _assert_one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("robaug train: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_data_root(capsys, tmp_path):
    _assert_one_line(_train_error(capsys, tmp_path, "--dataset", "cifar10"), "--data-root")


def test_bad_output_path(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    err = _train_error(capsys, tmp_path, "--out-dir", str(tmp_path / "file" / "run"))
    _assert_one_line(err, "out_dir", "--out-dir")


def test_config_mismatch_on_resume(capsys, tmp_path):
    from robaug.recipes.config import TrainConfig

    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"config": TrainConfig(lr=0.5).to_dict()}))
    _assert_one_line(_train_error(capsys, tmp_path), "different configuration", "lr", "--no-resume")


def test_no_cuda(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _assert_one_line(_train_error(capsys, tmp_path, "--device", "cuda"), "CUDA", "--device cpu")


@pytest.fixture
def fmnist():
    from robaug.data import find_fashion_mnist

    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed")


def test_unknown_model(capsys, tmp_path, fmnist):
    err = _train_error(capsys, tmp_path, "--model", "resnt50", "--train-subset", "64", "--test-subset", "16",
                       "--batch-size", "16")
    _assert_one_line(err, "unknown model 'resnt50'", "resnet50", "--model")


def test_batch_larger_than_the_data(capsys, tmp_path, fmnist):
    err = _train_error(capsys, tmp_path, "--train-subset", "16", "--test-subset", "16", "--batch-size", "32")
    _assert_one_line(err, "batch_size 32", "--batch-size")


def test_debug_shows_the_traceback(capsys, tmp_path):
    err = _train_error(capsys, tmp_path, "--dataset", "cifar10", debug=True)
    assert "Traceback (most recent call last)" in err and "--data-root" in err
    status = main(["train", "--debug", "--no-progress", "--dataset", "cifar10", "--out-dir", str(tmp_path / "r")])
    assert status == 2 and "Traceback" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--recipe", "mixup"])
    assert exit_.value.code == 2 and "usage: robaug train" in capsys.readouterr().err
