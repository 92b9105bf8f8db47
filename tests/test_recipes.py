"""Training recipes: data order and augmentation draws, loss terms of every recipe, resume after a kill,
2-process DDP (gloo) equivalence, bf16/channels_last on CPU, EMA, the CLI, and the quickstart notebook."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms.v2 import functional as TF

from robaug.recipes import augment as aug_mod
from robaug.recipes.augment import RECIPES, DeviceAugment, SampleAugment, get_recipe, js_divergence, recipe_loss
from robaug.recipes.cli import PRESETS, config_from_args
from robaug.recipes.datasets import DatasetInfo, TensorImages, load_dataset
from robaug.recipes.evaluate import SubsetBenchmark
from robaug.recipes.loader import ShardedBatchSampler, epoch_permutation, random_crop_flip
from robaug.recipes.seeding import derive_seed
from robaug.recipes.train import ModelEMA, TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_classifier.py"
FMNIST = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=2)

try:
    import robaug.transforms.ipmix  # noqa: F401

    HAVE_IPMIX = True
except ImportError:  # pragma: no cover
    HAVE_IPMIX = False
needs_ipmix = pytest.mark.skipif(not HAVE_IPMIX, reason="robaug.transforms.ipmix not available")


@pytest.fixture(scope="module")
def tiny_denoiser_path(tmp_path_factory) -> Path:
    """A randomly initialised diffusers UNet (the built-in model's layout, much smaller) as .safetensors + .json."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
               down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
               norm_num_groups=4)
    d = tmp_path_factory.mktemp("denoiser")
    save_file({k: v.contiguous() for k, v in UNet2DModel(**cfg).state_dict().items()}, str(d / "tiny.safetensors"))
    sched = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 prediction_type="epsilon")
    (d / "tiny.json").write_text(json.dumps({"unet": cfg, "scheduler": sched}))
    return d / "tiny.safetensors"


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
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------------------------------------------------
# data order and augmentation draws
# ---------------------------------------------------------------------------------------------------------


def test_random_crop_flip_matches_torchvision_per_sample():
    torch.manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 8, 10), dtype=torch.uint8)
    pad = 2
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the documented draw order: rows, columns, flips
    oy = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    fl = torch.rand(6, generator=g) < 0.5
    assert fl.any() and (~fl).any()
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [pad]), int(oy[i]), int(ox[i]), 8, 10)
        if fl[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=0)


def test_random_crop_flip_global_batch_slices_equal_single_process():
    x = torch.rand(8, 1, 12, 12)
    full = random_crop_flip(x, 3, torch.Generator().manual_seed(2))
    halves = [random_crop_flip(x[r * 4:(r + 1) * 4], 3, torch.Generator().manual_seed(2), total=8, offset=4 * r)
              for r in range(2)]
    torch.testing.assert_close(torch.cat(halves), full, rtol=0, atol=0)


def test_sharded_sampler_covers_global_batches_and_resumes():
    n, gb = 103, 8
    single = list(ShardedBatchSampler(n, gb, seed=3, epoch=2))
    perm = epoch_permutation(n, 3, 2)
    assert len(single) == n // gb
    assert [i for i, _ in single[4]] == perm[32:40].tolist()
    ranks = [list(ShardedBatchSampler(n, gb, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    for step in range(len(single)):
        assert ranks[0][step] + ranks[1][step] == single[step]  # same indices and the same per-sample seeds
    resumed = list(ShardedBatchSampler(n, gb, seed=3, epoch=2, start=5))
    assert resumed == single[5:]
    assert list(ShardedBatchSampler(n, gb, seed=3, epoch=3))[0] != single[0]
    with pytest.raises(ValueError, match="divisible"):
        ShardedBatchSampler(n, 9, seed=0, epoch=0, world_size=2)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "order", 1) == derive_seed(0, "order", 1)
    assert len({derive_seed(0, p, 1) for p in ("order", "base", "sample", "device")}) == 4
    assert 0 <= derive_seed(2**70, -5) < 2**63


def test_sample_augment_is_deterministic_in_the_seed():
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    tf = SampleAugment(FMNIST, get_recipe("baseline"), train=True)
    state = torch.get_rng_state()
    a, b, c = tf(img, 11), tf(img, 11), tf(img, 12)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == img.shape
    assert len({tf(img, s).sum().item() for s in range(20)}) > 3  # different seeds, different crops/flips
    del c


def test_load_dataset_fashion_mnist_subset_and_errors():
    ds, info = load_dataset("fmnist", train=False, subset=50)
    assert isinstance(ds, TensorImages) and len(ds) == 50 and info.in_channels == 1 and info.num_classes == 10
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist-c")
    with pytest.raises(ValueError, match="root"):
        load_dataset("cifar10")


# ---------------------------------------------------------------------------------------------------------
# losses and views of every recipe
# ---------------------------------------------------------------------------------------------------------


def _ce(logits, y):
    return -(logits.log_softmax(1)[torch.arange(len(y)), y]).mean()


def _js(a, b, c):
    ps = [z.softmax(1) for z in (a, b, c)]
    m = ((ps[0] + ps[1] + ps[2]) / 3).clamp(1e-7, 1)
    return sum((p * (p.log() - m.log())).sum(1).mean() for p in ps) / 3


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_loss_terms(name):
    spec = RECIPES[name]
    torch.manual_seed(0)
    b = 5
    y = torch.randint(0, 7, (b,))
    logits = torch.randn(spec.num_views * b, 7) * 3
    loss, terms = recipe_loss(logits, y, spec, jsd_weight=12.0)
    chunks = logits.split(b)
    expected = {"ce": _ce(chunks[0], y)}
    if spec.diffaug:
        expected["ce_diffaug"] = _ce(chunks[1], y)
    if spec.jsd:
        expected["jsd"] = 12.0 * _js(chunks[0], chunks[-2], chunks[-1])
    if spec.adversarial:  # TRADES: beta * KL(p_clean || p_adv), default beta 5
        p = chunks[0].softmax(1)
        expected["trades_kl"] = 5.0 * (p * (chunks[0].log_softmax(1) - chunks[-1].log_softmax(1))).sum(1).mean()
    assert set(terms) == set(expected)
    for k in expected:
        torch.testing.assert_close(terms[k], expected[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, sum(expected.values()), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="views"):
        recipe_loss(logits[:-1], y, spec)


def test_recipe_view_layout():
    assert RECIPES["baseline"].view_names == ("clean",)
    assert RECIPES["ipmix"].view_names == ("ipmix",)
    assert RECIPES["diffaug"].view_names == ("clean", "diffaug")
    assert RECIPES["ipmix_jsd"].view_names == ("clean", "ipmix1", "ipmix2")
    assert RECIPES["diffaug_ipmix_jsd"].view_names == ("clean", "diffaug", "ipmix1", "ipmix2")
    assert RECIPES["trades"].view_names == ("clean", "adversarial")
    assert get_recipe("DiffAug+IPMix-JSD") is RECIPES["diffaug_ipmix_jsd"]
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("cutmix")


def test_js_divergence_properties():
    torch.manual_seed(0)
    a = torch.randn(4, 10)
    assert float(js_divergence(a, a, a)) == pytest.approx(0.0, abs=1e-6)
    b, c = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(js_divergence(a, b, c), _js(a, b, c), rtol=1e-5, atol=1e-6)


def test_device_augment_diffaug_view_is_diffaug_of_the_cropped_batch(tiny_denoiser_path):
    from robaug.hub import load_denoiser
    from robaug.transforms.diffaug import DiffAug

    den = load_denoiser(tiny_denoiser_path)
    spec = RECIPES["diffaug"]
    dev_aug = DeviceAugment(FMNIST, spec, base_on_device=True, mixer_on_device=True, denoiser=den)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    views = dev_aug(x, 7, rank_seed=9)
    assert [v.shape for v in views] == [(4, 1, 28, 28)] * 2 and all(v.dtype == torch.float32 for v in views)
    crop = random_crop_flip(x, 2, torch.Generator().manual_seed(derive_seed(7, "base"))).float() / 255
    torch.testing.assert_close(views[0], crop)
    ref = DiffAug(den, generator=torch.Generator().manual_seed(derive_seed(9, "device", 2)))(crop)
    torch.testing.assert_close(views[1], ref)
    assert not torch.allclose(views[1], views[0], atol=1e-2)


@needs_ipmix
def test_device_augment_ipmix_jsd_views():
    spec = RECIPES["ipmix_jsd"]
    dev_aug = DeviceAugment(FMNIST, spec, base_on_device=False, mixer_on_device=True)
    x = torch.rand(4, 1, 28, 28)
    views = dev_aug(x, 1, rank_seed=2)
    assert len(views) == 3 and all(v.shape == x.shape for v in views)
    torch.testing.assert_close(views[0], x)
    assert not torch.allclose(views[1], views[2])
    again = dev_aug(x, 1, rank_seed=2)
    for a, b in zip(views, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_device_augment_errors():
    with pytest.raises(ValueError, match="denoiser"):
        DeviceAugment(FMNIST, RECIPES["diffaug"], base_on_device=True, mixer_on_device=True)
    with pytest.raises(ValueError, match="workers"):
        DeviceAugment(FMNIST, RECIPES["augmix"], base_on_device=False, mixer_on_device=True)


def test_sample_augment_augmix_jsd_views():
    tf = SampleAugment(FMNIST, RECIPES["augmix_jsd"], train=True, mixer_in_worker=True)
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    views = tf(img, 3)
    assert isinstance(views, tuple) and len(views) == 3 and all(v.shape == img.shape for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, tf(img, 3)))


# ---------------------------------------------------------------------------------------------------------
# schedule, EMA, CLI, evaluation helpers
# ---------------------------------------------------------------------------------------------------------


def test_lr_schedule():
    assert lr_at(0, 100, 0.1, 10) == pytest.approx(0.01)
    assert lr_at(9, 100, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(55, 100, 0.1, 10) == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, 10) == pytest.approx(0.0, abs=1e-12)


def test_model_ema_update_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 3))  # moves the BN statistics and the counter
    ema.update(model, step=1000)
    for k, v in ema.module.state_dict().items():
        m = model.state_dict()[k]
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * m)
        else:
            assert torch.equal(v, m)
    ema.update(model, step=0)  # warm-up: decay min(0.9, 1/10) = 0.1
    w = ema.module[0].weight
    assert torch.allclose(w, model[0].weight, atol=0.2)


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


def test_subset_benchmark_truncates():
    from robaug.eval.benchmarks import InMemoryCorruptionBenchmark

    data = {"fog": torch.randint(0, 256, (2, 10, 1, 4, 4), dtype=torch.uint8)}
    bench = InMemoryCorruptionBenchmark(data, torch.arange(10), severities=[1, 2])
    sub = SubsetBenchmark(bench, 7)
    got = list(sub.batches("fog", 2, batch_size=3))
    assert [len(y) for _, y in got] == [3, 3, 1]
    torch.testing.assert_close(torch.cat([x for x, _ in got]), data["fog"][1, :7].float() / 255)
    assert len(sub.dataset("fog", 1)) == 7


# ---------------------------------------------------------------------------------------------------------
# training runs
# ---------------------------------------------------------------------------------------------------------

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
    return [sys.executable, str(SCRIPT), "--train-subset", "1024", "--test-subset", "100", "--batch-size", "32",
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
        resumed = train(config_from_args(_cli_args(killed, steps)[2:]))
        full = train(config_from_args(_cli_args(tmp_path / "full", steps)[2:]))
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
                        str(SCRIPT), *common, "--out-dir", str(two)], env=_env(), capture_output=True, text=True,
                       timeout=300)
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


# ---------------------------------------------------------------------------------------------------------
# notebook
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if not (ROOT / "robaug" / "weights" / "fmnist-ddpm.safetensors").is_file():
        pytest.skip("the built-in fmnist-ddpm weights are not in robaug/weights yet")
    nb = nbformat.read(ROOT / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
    env_cell = nbformat.v4.new_code_cell(  # tiny settings, and one thread like the rest of the test suite
        "import os\nos.environ['ROBAUG_QUICKSTART_SMALL'] = '1'\n"
        f"os.environ['ROBAUG_CACHE'] = {str(tmp_path / 'cache')!r}\n"
        "import torch\ntorch.set_num_threads(1)\n"
    )
    nb.cells.insert(0, env_cell)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )
    assert "clean accuracy" in outputs
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_quick_compare_small(tmp_path, tiny_denoiser_path):
    from robaug.eval.corruptions import DEFAULT_CORRUPTIONS
    from robaug.recipes import quick_compare

    r = quick_compare(("baseline", "diffaug"), steps=3, batch_size=16, train_subset=256, test_subset=64,
                      corruption_images=8, denoiser=str(tiny_denoiser_path), out_dir=tmp_path / "runs", cache_dir=tmp_path / "c",
                      progress=False, verbose=False, plot=tmp_path / "cmp.png")
    assert [row["recipe"] for row in r["rows"]] == ["baseline", "diffaug"]
    for row in r["rows"]:
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["corruption_accuracy"] <= 1
        assert len(row["per_corruption_accuracy"]) == len(DEFAULT_CORRUPTIONS)
    assert r["table"].count("\n") == 3 and "CE(f(x)) + CE(f(DiffAug(x)))" in r["table"]
    assert Path(r["figure"]).stat().st_size > 1000
