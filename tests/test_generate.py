"""Shards, the DM-Improves-AT npz format, and `robaug generate`: resume after a kill, 2 processes == 1 process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robaug.data.shards import (
    ShardDataset,
    ShardStream,
    load_manifest,
    load_shards,
    npz_to_shards,
    read_npz,
    read_shard,
    sha256_file,
    shards_to_npz,
    write_npz,
    write_shard,
)
from robaug.diffusion.samplers import GuidedDiffusion
from robaug.generate import generate_dataset, sample_seed

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from _generate_models import make_classifier, make_denoiser  # noqa: E402

REPO = TESTS.parent
GEN_ARGS = ["--model", "_generate_models:make_denoiser", "--num-samples", "40", "--shard-size", "5",
            "--batch-size", "2", "--steps", "4", "--cfg-scale", "1.5", "--seed", "7", "--no-progress"]


def env(**extra):
    e = dict(os.environ)
    e.update(PYTHONPATH=f"{TESTS}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", **extra)
    return e


def sampler():
    return GuidedDiffusion(make_denoiser(), num_steps=4, cfg_scale=1.5)


def shard_hashes(root):
    return {p.name: sha256_file(p) for p in sorted((Path(root) / "shards").glob("*.safetensors"))}


# ---------------------------------------------------------------------------------------------------------
# shard format


def test_shard_bytes_depend_only_on_content(tmp_path):
    x = torch.randint(0, 256, (6, 4, 4, 3), dtype=torch.uint8)
    y = torch.arange(6)
    a = write_shard(tmp_path / "a.safetensors", x, y, confidence=torch.rand(6))
    b = write_shard(tmp_path / "b.safetensors", x, y, confidence=read_shard(tmp_path / "a.safetensors")["confidence"])
    assert a == b == sha256_file(tmp_path / "a.safetensors")
    d = read_shard(tmp_path / "a.safetensors", sha256=a)
    assert torch.equal(d["image"], x) and torch.equal(d["label"], y)
    with pytest.raises(TypeError, match="uint8"):
        write_shard(tmp_path / "c.safetensors", x.float(), y)
    with pytest.raises(ValueError, match="sha256"):
        read_shard(tmp_path / "a.safetensors", sha256="0" * 64)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_npz_round_trip_and_conversion(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (23, 5, 5, 3), dtype=np.uint8)
    labels = np.arange(23) % 10
    write_npz(tmp_path / "syn.npz", imgs, labels)
    with np.load(tmp_path / "syn.npz") as f:  # the DM-Improves-AT layout, readable by plain numpy
        assert sorted(f.files) == ["image", "label"] and f["image"].dtype == np.uint8
        assert f["image"].shape == (23, 5, 5, 3) and f["label"].dtype == np.int64
    x, y = read_npz(tmp_path / "syn.npz")
    assert np.array_equal(x, imgs) and np.array_equal(y, labels)
    m = npz_to_shards(tmp_path / "syn.npz", tmp_path / "sh", shard_size=10, num_classes=10)
    assert m["num_shards"] == 3 and [s["count"] for s in m["shards"]] == [10, 10, 3]
    ds = ShardDataset(tmp_path / "sh")
    assert len(ds) == 23
    img, lab = ds[17]
    assert torch.equal(img, torch.from_numpy(imgs[17]).permute(2, 0, 1)) and lab == 17 % 10
    shards_to_npz(tmp_path / "sh", tmp_path / "back.npz")
    x2, y2 = read_npz(tmp_path / "back.npz")
    assert np.array_equal(x2, imgs) and np.array_equal(y2, labels)
    np.savez(tmp_path / "bad.npz", images=imgs)
    with pytest.raises(KeyError, match="'image'"):
        read_npz(tmp_path / "bad.npz")


def test_datasets_random_access_and_streaming(tmp_path):
    imgs = np.random.default_rng(1).integers(0, 256, (17, 4, 4, 1), dtype=np.uint8)
    write_npz(tmp_path / "a.npz", imgs, np.arange(17))
    npz_to_shards(tmp_path / "a.npz", tmp_path / "sh", shard_size=4)
    ds = ShardDataset(tmp_path / "sh", transform=lambda t: t.float() / 255, verify=True)
    assert torch.allclose(ds[-1][0], torch.from_numpy(imgs[16]).permute(2, 0, 1).float() / 255)
    with pytest.raises(IndexError):
        ds[17]
    # streaming: every sample exactly once, ranks disjoint, shuffling permutes
    seen = [lab for r in range(2) for _, lab in ShardStream(tmp_path / "sh", rank=r, world_size=2)]
    assert sorted(seen) == list(range(17))
    st = ShardStream(tmp_path / "sh", shuffle=True, seed=3)
    e0 = [lab for _, lab in st]
    st.set_epoch(1)
    e1 = [lab for _, lab in st]
    assert sorted(e0) == sorted(e1) == list(range(17)) and e0 != e1
    loader = DataLoader(ShardStream(tmp_path / "sh"), batch_size=4, num_workers=2)
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == list(range(17))
    x, y = load_shards(tmp_path / "sh")
    assert x.shape == (17, 1, 4, 4) and torch.equal(y, torch.arange(17))


# ---------------------------------------------------------------------------------------------------------
# generate_dataset in-process


def test_generate_is_balanced_seeded_and_resumable(tmp_path):
    out = tmp_path / "run"
    m = generate_dataset(out, sampler(), 13, shard_size=5, batch_size=2, seed=7, progress=False)
    assert m["complete"] and m["num_shards"] == 3 and m["num_classes"] == 3
    assert [s["seed_start"] for s in m["shards"]] == [sample_seed(7, 0), sample_seed(7, 5), sample_seed(7, 10)]
    x, y = load_shards(out)
    assert x.shape == (13, 1, 8, 8) and x.dtype == torch.uint8
    assert y.tolist() == [j % 3 for j in range(13)]
    # sample j is what the sampler gives for its class and seed
    ref = sampler()(torch.tensor([11 % 3]), seeds=[sample_seed(7, 11)])
    assert torch.equal(x[11], ref[0].mul(255).round().to(torch.uint8))
    assert m["sampler"]["cfg_scale"] == 1.5 and m["sampler"]["solver"] == "heun"
    hashes = shard_hashes(out)

    # lose one shard (and its record), corrupt another: a rerun rebuilds exactly those
    (out / "shards" / "shard-000001.json").unlink()
    (out / "shards" / "shard-000001.safetensors").unlink()
    p2 = out / "shards" / "shard-000002.safetensors"
    p2.write_bytes(p2.read_bytes()[:-1] + b"\0")
    before = (out / "shards" / "shard-000000.safetensors").stat().st_mtime_ns
    generate_dataset(out, sampler(), 13, shard_size=5, batch_size=2, seed=7, progress=False, verify=True)
    assert shard_hashes(out) == hashes
    assert (out / "shards" / "shard-000000.safetensors").stat().st_mtime_ns == before  # finished shards untouched

    with pytest.raises(ValueError, match="different run"):
        generate_dataset(out, sampler(), 13, shard_size=5, batch_size=2, seed=8, progress=False)
    m2 = generate_dataset(out, sampler(), 4, shard_size=5, batch_size=2, seed=8, progress=False, overwrite=True)
    assert m2["num_samples"] == 4 and len(shard_hashes(out)) == 1


def test_confidence_filtering_keeps_the_top_fraction_per_class(tmp_path):
    out = tmp_path / "filt"
    m = generate_dataset(out, sampler(), 24, shard_size=10, batch_size=4, filter_classifier=make_classifier(),
                         keep_fraction=0.5, progress=False)
    assert m["selection"]["count"] == 12
    d = [read_shard(out / s["file"]) for s in m["shards"]]
    conf, lab = torch.cat([t["confidence"] for t in d]), torch.cat([t["label"] for t in d])
    sel = torch.tensor(sorted(ShardDataset(out).global_index(i) for i in range(12)))
    for c in range(3):
        idx = torch.nonzero(lab == c).squeeze(1)
        kept = idx[torch.isin(idx, sel)]
        dropped = idx[~torch.isin(idx, sel)]
        assert len(kept) == 4 and conf[kept].min() >= conf[dropped].max()
    assert len(ShardDataset(out)) == 12 and len(ShardDataset(out, subset="all")) == 24
    assert sorted(lab for _, lab in ShardStream(out)) == sorted(lab[sel].tolist())


def test_unconditional_generation_with_pseudo_labels(tmp_path):
    from robaug.diffusion import CallableDenoiser

    D = CallableDenoiser(lambda x, s, y: 0.3 * x / (0.09 + s.to(x.dtype).view(-1, 1, 1, 1) ** 2) + 0.1,
                         in_channels=1, sample_size=8, sigma_min=0.01, sigma_max=20.0)
    m = generate_dataset(tmp_path / "u", GuidedDiffusion(D, num_steps=3), 6, shard_size=6, batch_size=3,
                         filter_classifier=make_classifier(), keep_fraction=1.0, progress=False)
    assert m["num_classes"] is None and m["labels"] == "classifier prediction"
    x, y = load_shards(tmp_path / "u", subset="all")
    with torch.no_grad():
        pred = make_classifier()(x.float() / 255).argmax(1)
    assert torch.equal(y, pred)
    m0 = generate_dataset(tmp_path / "u0", GuidedDiffusion(D, num_steps=3), 2, progress=False)
    assert load_shards(tmp_path / "u0")[1].tolist() == [-1, -1]


def test_cli_with_classifier_specs_contrastive_guidance_and_filter(tmp_path):
    from safetensors.torch import save_file

    from robaug.generate import main_generate
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
    assert m["sampler"]["sampler"] == "ContrastiveGuidedSampler" and kinds == ["ClassifierGuidance", "ContrastiveGuidance"]
    assert m["filter"]["fingerprint"] and m["selection"]["count"] == 3  # 1 of 2 per class
    assert len(ShardDataset(tmp_path / "a")) == 3
    # contrastive samples are coupled within a batch, but a rerun of the same command reproduces them exactly
    main_generate([*args, "--out", str(tmp_path / "b")])
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    with pytest.raises(ValueError, match="ARCH:WEIGHTS"):
        main_generate([*args[:-6], "--filter-classifier", "small_cnn", "--keep-fraction", "0.5",
                       "--out", str(tmp_path / "c")])


# ---------------------------------------------------------------------------------------------------------
# real processes


@pytest.mark.slow
def test_killed_generation_resumes_to_identical_shards(tmp_path):
    ref = tmp_path / "ref"
    generate_dataset(ref, GuidedDiffusion(make_denoiser(), num_steps=4, cfg_scale=1.5), 40, shard_size=5,
                     batch_size=2, seed=7, progress=False, model_name="_generate_models:make_denoiser")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robaug.generate", *GEN_ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(ROBAUG_TEST_DELAY="0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and not len(list((out / "shards").glob("*.json"))) >= 2:
        time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("*.json")))
    assert 2 <= done < 8 and not load_manifest(out)["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        ShardDataset(out)
    subprocess.run(cmd, cwd=tmp_path, env=env(), check=True, capture_output=True)
    assert load_manifest(out)["complete"]
    assert shard_hashes(out) == shard_hashes(ref) and len(shard_hashes(ref)) == 8
    assert load_manifest(out)["shards"] == load_manifest(ref)["shards"]


@pytest.mark.slow
def test_two_processes_make_the_same_dataset_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "robaug.generate", *GEN_ARGS, "--out", str(one)],
                   cwd=tmp_path, env=env(), check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "robaug.generate", *GEN_ARGS, "--out", str(two)],
                       cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert shard_hashes(one) == shard_hashes(two) and len(shard_hashes(one)) == 8
    m1, m2 = load_manifest(one), load_manifest(two)
    assert m1["shards"] == m2["shards"] and m2["complete"]
