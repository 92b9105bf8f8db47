"""robaug.recipes.train: training runs of every recipe, ImageFolder data, bf16/channels_last on CPU, finished runs,
resume after a kill (bit-identical) and 2-process DDP (gloo) equivalence."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _paths import subprocess_env
from safetensors.torch import load_file

from robaug.cli.train import config_from_args
from robaug.data.datasets import DatasetInfo, load_dataset
from robaug.recipes.augment import RECIPES
from robaug.recipes.train import TrainConfig, train

FMNIST = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2)

try:
    import robaug.transforms.ipmix  # noqa: F401

    HAVE_IPMIX = True
except ImportError:  # pragma: no cover
    HAVE_IPMIX = False
needs_ipmix = pytest.mark.skipif(not HAVE_IPMIX, reason="robaug.transforms.ipmix not available")


@contextlib.contextmanager
def _one_thread():
    """Bit-for-bit comparisons need the thread count of the subprocesses (OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _env() -> dict[str, str]:
    return subprocess_env()


SMALL = dict(train_subset=512, test_subset=200, batch_size=32, model="small_cnn", model_kwargs={"width": 8},
             eval_corruptions=False, progress=False, log_every=4, ckpt_every=0, lr=0.05)


def _run(tmp_path, name, **kw) -> tuple[dict, Path]:
    cfg = TrainConfig(**{**SMALL, "out_dir": str(tmp_path / name), **kw})
    return train(cfg), Path(cfg.out_dir)


@pytest.mark.parametrize("recipe,terms", [
    ("baseline", {"ce"}),
    ("augmix", {"ce"}),
    ("diffaug", {"ce", "ce_diffaug"}),
    pytest.param("diffaug_ipmix_jsd", {"ce", "ce_diffaug", "jsd"}, marks=needs_ipmix),
])
def test_training_logs_the_recipe_loss_terms(tmp_path, tiny_denoiser_path, recipe, terms):
    res, out = _run(tmp_path, recipe, recipe=recipe, steps=4, denoiser=str(tiny_denoiser_path))
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {k for k in hist[-1] if k in ("ce", "ce_diffaug", "jsd")}
    assert logged == terms
    assert hist[-1]["loss"] == pytest.approx(sum(hist[-1][k] for k in terms), rel=1e-5)
    assert res["recipe_loss"] == RECIPES[recipe].loss and 0.0 <= res["clean_accuracy"] <= 1.0
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("step,epoch,lr,loss")
    sd = load_file(str(out / "model.safetensors"))
    assert "model.fc.weight" in sd and "mean" in sd


def test_imagefolder_training_and_evaluation(tmp_path):
    """ImageNet layout: decoded and RandomResizedCrop'ed per sample in workers; eval Resize + CenterCrop."""
    import PIL.Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in ("cat", "dog"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                arr = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()
                PIL.Image.fromarray(arr).save(tmp_path / "data" / split / c / f"{i}.png")
    ds, info = load_dataset("imagefolder", tmp_path / "data", train=True, img_size=32)
    assert info.num_classes == 2 and info.img_size == 32 and len(ds) == 16
    res, out = _run(tmp_path, "folder", dataset="imagefolder", data_root=str(tmp_path / "data"), img_size=32,
                    train_subset=None, test_subset=None, batch_size=4, steps=3, num_workers=1, log_every=1)
    assert res["num_test_images"] == 6 and "corruption_accuracy" not in res
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 3 and "test_acc" in hist[-1]


@needs_ipmix
def test_training_ipmix_jsd_on_device_logs_jsd(tmp_path):
    res, out = _run(tmp_path, "device", recipe="ipmix_jsd", steps=2, log_every=1)
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "jsd"} <= set(hist[-1]) and hist[-1]["jsd"] > 0
    assert hist[-1]["loss"] == pytest.approx(hist[-1]["ce"] + hist[-1]["jsd"], rel=1e-5)


@needs_ipmix
def test_ipmix_in_workers_does_not_depend_on_the_number_of_workers(tmp_path):
    """Per-sample seeds: the same augmentations with 0 (main process) and 2 worker processes."""
    kw = dict(recipe="ipmix_jsd", ipmix_on="workers", steps=3, log_every=1, train_subset=192)
    _, a = _run(tmp_path, "w0", num_workers=0, **kw)
    _, b = _run(tmp_path, "w2", num_workers=2, **kw)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    hist = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["jsd"] > 0


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    ref, _ = _run(tmp_path, "fp32", steps=6)
    res, out = _run(tmp_path, "bf16", steps=6, amp="bf16", channels_last=True, ema_decay=0.9)
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    w = ck["model"]["model.features.3.weight"]  # (16, 8, 3, 3): the two layouts differ
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_hist = [json.loads(line) for line in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()]
    # bf16 changes the numbers a little, not the training: first-interval losses agree to bf16 precision
    assert hist[0]["loss"] == pytest.approx(ref_hist[0]["loss"], rel=0.05)
    assert hist[0]["loss"] != ref_hist[0]["loss"]
    assert "raw_model_clean_accuracy" in res and ck["ema"]


def test_bf16_autocast_runs_the_model_in_bf16():
    from robaug.recipes.train import build_model

    model = build_model(TrainConfig(model="small_cnn", model_kwargs={"width": 4}), FMNIST)
    seen = []
    model.model.features[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(2, 1, 28, 28).contiguous(memory_format=torch.channels_last))
    assert seen == [torch.bfloat16]


def test_finished_run_is_not_retrained_and_config_mismatch_is_refused(tmp_path):
    res, out = _run(tmp_path, "done", steps=3)
    again = train(TrainConfig(**{**SMALL, "out_dir": str(out), "steps": 3, "num_workers": 0}))
    assert again["train_seconds"] == res["train_seconds"]
    with pytest.raises(ValueError, match="different configuration"):
        train(TrainConfig(**{**SMALL, "out_dir": str(out), "steps": 3, "lr": 0.2}))
    # other evaluation settings: the final weights are evaluated again, nothing is retrained
    weights = (out / "model.safetensors").read_bytes()
    more = train(TrainConfig(**{**SMALL, "out_dir": str(out), "steps": 3, "eval_corruptions": True,
                                "corruption_images": 8, "corruptions": ["contrast"], "cache_dir": str(tmp_path / "c")}))
    assert more["train_seconds"] == res["train_seconds"] and more["clean_accuracy"] == res["clean_accuracy"]
    assert set(more["corruption"]["per_corruption_accuracy"]) == {"contrast"} and "corruption_accuracy" not in res
    assert (out / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "results.json").read_text())["config"]["corruption_images"] == 8


def _cli_args(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "robaug", "train", "--train-subset", "1024", "--test-subset", "100",
            "--batch-size", "32",
            "--model", "small_cnn", "--model-kwargs", '{"width": 8}', "--steps", str(steps), "--ckpt-every", "10",
            "--log-every", "5", "--no-eval-corruptions", "--no-progress", "--lr", "0.05", "--out-dir", str(out),
            "--seed", "4"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    steps = 150
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli_args(killed, steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        while proc.poll() is None and not (killed / "checkpoint.pt").exists():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # a real kill -9 while it trains
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert not (killed / "results.json").exists()
    ck_step = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < ck_step < steps

    # rerun the same command: it continues from the checkpoint (in-process here, same thread count)
    with _one_thread():
        resumed = train(config_from_args(_cli_args(killed, steps)[4:]))
        full = train(config_from_args(_cli_args(tmp_path / "full", steps)[4:]))
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["clean_accuracy"] == full["clean_accuracy"]
    assert resumed["train_seconds"] != full["train_seconds"]  # it really was two different runs
    ha, hb = ((p / "metrics.jsonl").read_text().splitlines() for p in (tmp_path / "full", killed))
    assert [json.loads(h)["loss"] for h in ha] == [json.loads(h)["loss"] for h in hb]
    logged = [json.loads(h)["step"] for h in hb]  # no step lost or logged twice across the kill
    assert logged == [json.loads(h)["step"] for h in ha] == sorted(set(range(5, steps + 1, 5)) | {32, 64, 96, 128, 150})


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    """Global batch 32 on one process == 16 + 16 on two gloo processes (BN-free ViT, so no per-process
    statistics): same samples, same crop/flip draws, all-reduced gradients -> the same weights."""
    common = ["--train-subset", "256", "--test-subset", "64", "--batch-size", "32", "--steps", "6",
              "--model", "vit_tiny", "--model-kwargs", '{"depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 7}',
              "--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0.01", "--no-eval-corruptions",
              "--no-progress", "--log-every", "2", "--seed", "1"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    with _one_thread():
        train(config_from_args([*common, "--out-dir", str(one)]))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "robaug", "train", *common, "--out-dir", str(two)], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((two / "results.json").read_text())
    assert res["world_size"] == 2
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    la = [json.loads(h)["loss"] for h in (one / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(h)["loss"] for h in (two / "metrics.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-4)
    assert la[0] != la[-1]
