"""robaug.recipes.train with TRADES and generated data mixed into every batch (DM-Improves-AT): loss terms, the
adversarial evaluation, resume after an interruption, DDP over gloo, re-evaluation of finished runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robaug.recipes.train import TrainConfig, _check_resume, train

train_mod = importlib.import_module("robaug.recipes.train")  # the module (robaug.recipes.train is also a function)


SMALL = dict(train_subset=256, test_subset=100, batch_size=20, model="small_cnn", model_kwargs={"width": 4},
             eval_corruptions=False, progress=False, log_every=2, ckpt_every=3, lr=0.05, label_smoothing=0.1,
             trades_eps=0.1, trades_step_size=0.04, trades_steps=2)


def _hist(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trades_recipe_logs_its_terms_and_writes_the_adversarial_evaluation(tmp_path, shard_dir):
    cfg = TrainConfig(**{**SMALL, "recipe": "trades", "steps": 4, "synthetic_data": str(shard_dir / "shards"),
                         "eval_pgd": (0.1, 3), "eval_autoattack": 0.1, "eval_autoattack_attacks": ["apgd-ce"],
                         "eval_autoattack_iters": 3, "eval_adv_images": 30, "out_dir": str(tmp_path / "t")})
    res = train(cfg)
    h = _hist(tmp_path / "t")[-1]
    assert {"ce", "trades_kl"} <= set(h) and h["trades_kl"] > 0
    assert h["loss"] == pytest.approx(h["ce"] + h["trades_kl"], rel=1e-5)
    assert res["synthetic_images"] == 96 and res["train_images"] == 256
    assert res["epochs"] == pytest.approx(4 / (256 // 6))  # an epoch = one pass over the real data
    adv = res["adversarial"]
    assert adv["images"] == 30 and adv["pgd"]["attack"] == "PGD-3" and adv["autoattack"]["attacks"] == ["apgd-ce"]
    for r in (adv["pgd"], adv["autoattack"]):
        assert 0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1
    saved = json.loads((tmp_path / "t" / "results.json").read_text())
    assert saved["adversarial"]["pgd"]["robust_accuracy"] == adv["pgd"]["robust_accuracy"]
    assert "trades_kl" in (tmp_path / "t" / "metrics.csv").read_text().splitlines()[0]


class _Stop(Exception):
    pass


def test_interrupted_synthetic_trades_run_resumes_to_identical_weights(tmp_path, shard_dir, monkeypatch):
    kw = {**SMALL, "recipe": "trades", "steps": 8, "synthetic_data": str(shard_dir / "shards")}
    full = train(TrainConfig(**kw, out_dir=str(tmp_path / "full")))

    real_lr_at = train_mod.lr_at

    def dying_lr_at(step, *a, **k):  # the process dies at step 7, after the checkpoint of step 6
        if step == 7:
            raise _Stop
        return real_lr_at(step, *a, **k)

    monkeypatch.setattr(train_mod, "lr_at", dying_lr_at)
    with pytest.raises(_Stop):
        train(TrainConfig(**kw, out_dir=str(tmp_path / "cut")))
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 6
    monkeypatch.setattr(train_mod, "lr_at", real_lr_at)
    resumed = train(TrainConfig(**kw, out_dir=str(tmp_path / "cut")))
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["clean_accuracy"] == full["clean_accuracy"]
    assert [h["loss"] for h in _hist(tmp_path / "full")] == [h["loss"] for h in _hist(tmp_path / "cut")]
    # and the synthetic data mattered: the same run without it ends elsewhere
    train(TrainConfig(**{**kw, "synthetic_data": None}, out_dir=str(tmp_path / "real")))
    c = load_file(str(tmp_path / "real" / "model.safetensors"))
    assert not torch.equal(a["model.fc.weight"], c["model.fc.weight"])


def test_baseline_recipe_with_synthetic_data_and_old_configs_resume(tmp_path, shard_dir):
    res = train(TrainConfig(**{**SMALL, "recipe": "baseline", "steps": 2, "synthetic_fraction": 0.5,
                               "synthetic_data": str(shard_dir / "syn.npz"), "out_dir": str(tmp_path / "b")}))
    assert res["synthetic_images"] == 96 and "adversarial" not in res
    # a config written before the TRADES / synthetic fields existed still matches a default run
    base = {k: v for k, v in SMALL.items() if not k.startswith("trades_")}
    old = TrainConfig(**base).to_dict()
    for k in ("trades_eps", "trades_step_size", "trades_steps", "trades_beta", "trades_norm", "trades_bn",
              "synthetic_data", "synthetic_fraction"):
        old.pop(k)
    _check_resume(old, TrainConfig(**base), tmp_path / "x")
    with pytest.raises(ValueError, match="different configuration"):
        _check_resume(old, TrainConfig(**base, trades_beta=6.0), tmp_path / "x")


@pytest.mark.slow
def test_trades_with_synthetic_data_on_two_gloo_processes(tmp_path, shard_dir):
    """DDP: the attack runs on the bare module, the two loss forwards through DDP; the run completes and logs."""
    import subprocess
    import sys

    from _paths import subprocess_env

    env = subprocess_env()
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "robaug", "train", "--recipe", "trades", "--train-subset", "256",
                        "--test-subset", "64", "--batch-size", "20", "--model-kwargs", '{"width": 4}', "--steps", "3",
                        "--log-every", "1", "--no-eval-corruptions", "--no-progress", "--trades-eps", "0.1",
                        "--trades-step-size", "0.04", "--trades-steps", "2",
                        "--synthetic-data", str(shard_dir / "shards"),
                        "--eval-pgd", "0.1,2", "--eval-adv-images", "20", "--out-dir", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["synthetic_images"] == 96 and "pgd" in res["adversarial"]
    h = _hist(out)
    assert len(h) == 3 and all(x["trades_kl"] >= 0 for x in h)
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model.safetensors")).values())


def test_finished_run_gets_the_adversarial_evaluation_without_retraining(tmp_path):
    kw = {**{k: v for k, v in SMALL.items() if not k.startswith("trades_")}, "steps": 2, "out_dir": str(tmp_path / "r")}
    first = train(TrainConfig(**kw))
    assert "adversarial" not in first
    weights = (tmp_path / "r" / "model.safetensors").read_bytes()
    again = train(TrainConfig(**kw, eval_pgd=(0.05, 2), eval_adv_images=16))
    assert again["train_seconds"] == first["train_seconds"] and again["clean_accuracy"] == first["clean_accuracy"]
    assert again["adversarial"]["images"] == 16 and again["adversarial"]["pgd"]["eps"] == 0.05
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == weights
    same = train(TrainConfig(**kw, eval_pgd=(0.05, 2), eval_adv_images=16))  # nothing changed: returned as is
    assert same["adversarial"] == again["adversarial"]


def test_reevaluating_a_synthetic_run_does_not_need_the_generated_set(tmp_path, shard_dir):
    import shutil

    npz = tmp_path / "syn.npz"
    shutil.copy(shard_dir / "syn.npz", npz)
    kw = {**{k: v for k, v in SMALL.items() if not k.startswith("trades_")}, "steps": 2, "synthetic_fraction": 0.5,
          "synthetic_data": str(npz), "out_dir": str(tmp_path / "r")}
    first = train(TrainConfig(**kw))
    npz.unlink()  # moved away after training: only the evaluation settings change below
    again = train(TrainConfig(**kw, eval_pgd=(0.05, 2), eval_adv_images=16))
    assert again["train_seconds"] == first["train_seconds"] and again["synthetic_images"] == first["synthetic_images"]
    assert again["adversarial"]["images"] == 16


def test_synthetic_subset_uses_the_first_generated_images(tmp_path, shard_dir):
    from robaug._core.dist import DistInfo
    from robaug.data.datasets import load_dataset, load_synthetic
    from robaug.recipes.training_data import _synthetic_mix

    base = {**SMALL, "recipe": "baseline", "steps": 1, "synthetic_data": str(shard_dir / "shards")}
    res = train(TrainConfig(**base, synthetic_subset=40, out_dir=str(tmp_path / "s")))
    assert res["synthetic_images"] == 40
    real, info = load_dataset("fashion_mnist", train=True, subset=SMALL["train_subset"])
    full = load_synthetic(base["synthetic_data"], info)
    mix = _synthetic_mix(TrainConfig(**base, synthetic_subset=40), real, info, DistInfo())
    assert torch.equal(mix.dataset.images[len(real):], full.images[:40])
    assert torch.equal(mix.dataset.labels[len(real):], full.labels[:40])
    with pytest.raises(ValueError, match="holds 96 images: use at most 96"):
        train(TrainConfig(**base, synthetic_subset=97, out_dir=str(tmp_path / "t")))
    with pytest.raises(ValueError, match="synthetic_subset must be >= 1"):
        TrainConfig(**base, synthetic_subset=0)
