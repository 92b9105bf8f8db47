"""`robaug generate` (robaug.cli.generate; main_generate is the raising entry point):
classifier specs, classifier + contrastive guidance and confidence filtering from the command line."""

import sys
from pathlib import Path

import pytest
import torch

from robaug.data.shards import ShardDataset, load_manifest, sha256_file

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))


def shard_hashes(root):
    return {p.name: sha256_file(p) for p in sorted((Path(root) / "shards").glob("*.safetensors"))}


def test_cli_with_classifier_specs_contrastive_guidance_and_filter(tmp_path):
    from safetensors.torch import save_file

    from robaug.cli.generate import main_generate
    from robaug.models import SmallCNN

    torch.manual_seed(0)
    clf = SmallCNN(3, in_channels=1).eval()  # BatchNorm: 0-d buffers in the state dict
    weights = tmp_path / "clf.safetensors"
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, weights)
    spec = f"small_cnn:{weights}"
    args = ["--model", "_generate_models:make_denoiser", "--num-samples", "6", "--shard-size", "3", "--batch-size", "3",
            "--steps", "3", "--no-progress", "--classifier", spec, "--classifier-scale", "0.5",
            "--contrastive-encoder", spec, "--contrastive-scale", "5", "--filter-classifier", spec,
            "--keep-fraction", "0.5"]
    assert main_generate([*args, "--out", str(tmp_path / "a")]) == 0
    m = load_manifest(tmp_path / "a")
    kinds = [t["type"] for t in m["sampler"]["terms"]]
    assert m["sampler"]["sampler"] == "ContrastiveGuidedSampler"
    assert kinds == ["ClassifierGuidance", "ContrastiveGuidance"]
    assert m["filter"]["fingerprint"] and m["selection"]["count"] == 3  # 1 of 2 per class
    assert len(ShardDataset(tmp_path / "a")) == 3
    # contrastive samples are coupled within a batch, but a rerun of the same command reproduces them exactly
    main_generate([*args, "--out", str(tmp_path / "b")])
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    with pytest.raises(ValueError, match="ARCH:WEIGHTS"):
        main_generate([*args[:-6], "--filter-classifier", "small_cnn", "--keep-fraction", "0.5",
                       "--out", str(tmp_path / "c")])


def test_unconditional_samples_the_null_label_and_takes_the_classifiers_labels(tmp_path):
    from robaug.cli.generate import main_generate
    from robaug.data.shards import load_shards

    base = ["--model", "_generate_models:make_denoiser", "--num-samples", "8", "--shard-size", "4", "--batch-size", "4",
            "--steps", "3", "--no-progress"]
    filt = ["--filter-classifier", "_generate_models:make_classifier", "--keep-fraction", "1"]
    assert main_generate([*base, *filt, "--unconditional", "--out", str(tmp_path / "u")]) == 0
    m = load_manifest(tmp_path / "u")
    assert m["num_classes"] is None and m["labels"] == "classifier prediction"
    images, labels = load_shards(tmp_path / "u")[:2]
    # every label is the classifier's prediction on the stored image (mean brightness -> dark / mid / bright)
    from _generate_models import make_classifier

    expected = make_classifier()(images.float() / 255).argmax(1) if images.dtype == torch.uint8 else None
    assert expected is not None and torch.equal(labels, expected)
    # the null label (3) was sampled, not the classes: the images differ from a conditional run's
    main_generate([*base, *filt, "--out", str(tmp_path / "c")])
    assert not torch.equal(images, load_shards(tmp_path / "c")[0])
    with pytest.raises(ValueError, match="--unconditional needs --filter-classifier"):
        main_generate([*base, "--unconditional", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="classifier guidance needs the classes"):
        main_generate([*base, *filt, "--unconditional", "--classifier", "_generate_models:make_classifier",
                       "--out", str(tmp_path / "y")])


def test_command_reports_a_bad_spec_in_one_line_and_exits_2(tmp_path, capsys):
    """Through `robaug generate` (the robaug.cli contract: add_arguments / run / main) a user error is one line on
    stderr and exit status 2; `--debug` re-raises nothing but prints the traceback."""
    pytest.importorskip("robaug.cli._common", reason="needs the robaug/cli/ package (issue 10)")
    from robaug.cli import generate as cli_generate

    args = ["--model", "_generate_models:make_denoiser", "--num-samples", "2", "--no-progress", "--filter-classifier",
            "small_cnn", "--keep-fraction", "0.5", "--out", str(tmp_path / "c")]
    assert cli_generate.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robaug generate: error:") and "ARCH:WEIGHTS" in err[0]
    assert cli_generate.main([*args, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_help_names_the_command_and_shows_defaults(capsys):
    from robaug.cli.generate import main_generate

    with pytest.raises(SystemExit) as exit_:
        main_generate(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: robaug generate ")
    assert "(default: 10000)" in out and "(default: heun)" in out  # --shard-size, --solver
    assert "robaug generate --model fmnist-ddpm" in out and "torchrun" in out  # the examples, kept as written


GEN = ["--model", "_generate_models:make_denoiser", "--num-samples", "4", "--shard-size", "2", "--batch-size", "2",
       "--steps", "2"]


@pytest.mark.parametrize("flags,pattern", [
    (["--cfg-scale", "nan"], r"--cfg-scale must be a finite number"),
    (["--s-noise", "inf"], r"--s-noise must be a finite number"),
    (["--contrastive-scale=-inf"], r"--contrastive-scale must be a finite number"),
    (["--num-samples", "0"], r"--num-samples must be >= 1"),
    (["--steps", "0"], r"--steps must be >= 1"),
    (["--keep-fraction", "nan"], r"--keep-fraction"),
])
def test_bad_numbers_are_refused_before_the_model_is_loaded(tmp_path, flags, pattern):
    from robaug.cli.generate import main_generate

    # the model spec points at a module that does not exist: the flag check must come first
    with pytest.raises(ValueError, match=pattern):
        main_generate(["--model", "no_such_module_xyz:f", "--out", str(tmp_path / "o"), "--num-samples", "4", *flags])
    assert not (tmp_path / "o").exists()


def test_model_specs_that_are_not_denoisers_and_too_many_classes(tmp_path):
    from robaug.cli.generate import main_generate

    with pytest.raises(ValueError, match=r"--model os:getcwd gave a str, not a robaug Denoiser"):
        main_generate(["--model", "os:getcwd", "--out", str(tmp_path / "o"), "--num-samples", "4"])
    with pytest.raises(ValueError, match=r"--model os:no_such_thing: .*has no attribute 'no_such_thing'"):
        main_generate(["--model", "os:no_such_thing", "--out", str(tmp_path / "o"), "--num-samples", "4"])
    with pytest.raises(ValueError, match=r"--num-classes 12: the model .* has 3 classes"):
        main_generate([*GEN, "--num-classes", "12", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_quiet_writes_only_the_result_to_stdout(tmp_path, capsys, monkeypatch):
    from robaug.cli.generate import main_generate

    monkeypatch.setenv("ROBAUG_QUIET", "0")
    assert main_generate([*GEN, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out.strip() == f"{tmp_path / 'q'}: 4 images in 2 shards"
    import os

    assert os.environ["ROBAUG_QUIET"] == "0"  # --quiet does not leak into the rest of the process
    assert main_generate([*GEN, "--out", str(tmp_path / "v"), "--no-verify", "--lock-timeout", "5"]) == 0
    cap = capsys.readouterr()
    assert "generate (rank 0 of 1)" in cap.err and "4 images in 2 shards" in cap.out


def test_a_locked_folder_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("robaug.cli._common", reason="needs the robaug/cli/ package (issue 10)")
    from filelock import FileLock

    from robaug.cli import generate as cli_generate
    from robaug.recipes.generation import LOCK_NAME

    (tmp_path / "o").mkdir()
    with FileLock(str(tmp_path / "o" / LOCK_NAME)):
        assert cli_generate.main([*GEN, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another `robaug generate` is writing to" in err[0]
