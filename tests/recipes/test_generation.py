"""generate_dataset (robaug.recipes.generation): class-balanced, seeded, resumable, filtered;
and real processes: resume after a kill, 2 processes (torchrun) == 1 process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robaug.data.shards import (
    ShardDataset,
    ShardStream,
    load_manifest,
    load_shards,
    read_shard,
    sha256_file,
)
from robaug.diffusion.samplers import GuidedDiffusion
from robaug.recipes.generation import generate_dataset, sample_seed

TESTS = Path(__file__).resolve().parents[1]
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
    assert m0["num_classes"] is None and m0["labels"] == "none (-1)"
    assert load_shards(tmp_path / "u0")[1].tolist() == [-1, -1]


# ---------------------------------------------------------------------------------------------------------
# real processes


@pytest.mark.slow
def test_killed_generation_resumes_to_identical_shards(tmp_path):
    ref = tmp_path / "ref"
    generate_dataset(ref, GuidedDiffusion(make_denoiser(), num_steps=4, cfg_scale=1.5), 40, shard_size=5,
                     batch_size=2, seed=7, progress=False, model_name="_generate_models:make_denoiser")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robaug", "generate", *GEN_ARGS, "--out", str(out)]
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
    subprocess.run([sys.executable, "-m", "robaug", "generate", *GEN_ARGS, "--out", str(one)],
                   cwd=tmp_path, env=env(), check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "robaug", "generate", *GEN_ARGS, "--out", str(two)],
                       cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert shard_hashes(one) == shard_hashes(two) and len(shard_hashes(one)) == 8
    m1, m2 = load_manifest(one), load_manifest(two)
    assert m1["shards"] == m2["shards"] and m2["complete"]


# ---------------------------------------------------------------------------------------------------------
# nothing silent: bad settings, non-finite images, damaged shards, two runs on one folder, umask


class NaNFromSample3(GuidedDiffusion):
    """A sampler whose batches containing sample index >= 3 come out with one NaN (or inf) pixel."""

    bad = float("nan")

    def forward(self, class_labels=None, num_samples=None, *, seeds=None, **kw):
        x = super().forward(class_labels, num_samples, seeds=seeds, **kw)
        if max(seeds) % (1 << 32) >= 3:
            x[-1, 0, 0, 0] = self.bad
        return x


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_batch_is_never_written(tmp_path, bad):
    s = NaNFromSample3(make_denoiser(), num_steps=2)
    s.bad = bad
    out = tmp_path / "nan"
    with pytest.raises(ValueError, match=r"shard 1 \(samples 3\.\.5\): the sampler returned NaN/inf"):
        generate_dataset(out, s, 9, shard_size=3, batch_size=3, progress=False)
    assert (out / "shards" / "shard-000000.json").is_file()  # the finished shard stays, valid for a resume
    assert not (out / "shards" / "shard-000001.safetensors").exists()
    assert not (out / "shards" / "shard-000001.json").exists()
    assert not load_manifest(out)["complete"]


def test_bad_counts_classes_and_folders_are_refused_before_any_work(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=r"num_classes=12 but the model has 3 classes"):
        generate_dataset(out, sampler(), 10, num_classes=12, progress=False)
    with pytest.raises(ValueError, match=r"num_classes must be >= 1"):
        generate_dataset(out, sampler(), 10, num_classes=0, progress=False)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        generate_dataset(out, sampler(), 10, batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"seed must lie"):
        generate_dataset(out, sampler(), 10, seed=-1, progress=False)
    assert not out.exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
        generate_dataset(tmp_path / "afile", sampler(), 2, progress=False)
    m = generate_dataset(out, sampler(), 4, num_classes=2, shard_size=4, progress=False)  # fewer classes: fine
    assert load_shards(out)[1].tolist() == [0, 1, 0, 1] and m["num_classes"] == 2


def test_a_second_run_on_one_folder_stops_or_waits_for_the_first(tmp_path):
    import threading

    from filelock import FileLock

    from robaug.recipes.generation import LOCK_NAME

    out = tmp_path / "locked"
    out.mkdir()
    first = FileLock(str(out / LOCK_NAME), thread_local=False)  # stands for a running `robaug generate`
    first.acquire()
    try:
        with pytest.raises(BlockingIOError, match=r"another `robaug generate` is writing to .*locked"):
            generate_dataset(out, sampler(), 3, shard_size=3, progress=False)
        with pytest.raises(BlockingIOError):
            generate_dataset(out, sampler(), 3, shard_size=3, progress=False, lock_timeout=0.3)
        assert not (out / "manifest.json").exists()  # nothing done twice
        threading.Timer(0.5, first.release).start()
        t0 = time.monotonic()
        m = generate_dataset(out, sampler(), 3, shard_size=3, progress=False, lock_timeout=60)
        assert m["complete"] and time.monotonic() - t0 >= 0.45  # it waited for the first run
    finally:
        first.release(force=True)
    probe = FileLock(str(out / LOCK_NAME))
    probe.acquire(timeout=0)  # released at the end of the run
    probe.release()


def test_stale_temporaries_are_swept_and_files_follow_the_umask(tmp_path):
    import stat

    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        generate_dataset(out, sampler(), 6, shard_size=3, batch_size=3, progress=False)
        stale = [out / ".manifest.0123456789ab.robaug-tmp.json",
                 out / "shards" / ".shard-000001.0123456789ab.robaug-tmp.safetensors"]
        for p in stale:
            p.write_bytes(b"half a file")  # fresh mtime: the lock holder sweeps them anyway
        keep = out / "shards" / "notes.txt"
        keep.write_text("mine")
        generate_dataset(out, sampler(), 6, shard_size=3, batch_size=3, progress=False)
    finally:
        os.umask(old)
    assert not any(p.exists() for p in stale) and keep.exists()
    written = [out / "manifest.json", *sorted((out / "shards").glob("shard-*"))]
    assert len(written) == 5
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, (p, oct(p.stat().st_mode))


def test_resume_checks_the_size_always_and_the_sha256_by_default(tmp_path, capsys):
    out = tmp_path / "run"
    m = generate_dataset(out, sampler(), 9, shard_size=3, batch_size=3, progress=False)
    assert all(s["bytes"] == (out / s["file"]).stat().st_size for s in m["shards"])
    ref = shard_hashes(out)
    p0, p1 = out / "shards" / "shard-000000.safetensors", out / "shards" / "shard-000001.safetensors"
    p0.write_bytes(p0.read_bytes()[:-1])  # truncated
    data = bytearray(p1.read_bytes())
    data[-5] ^= 0x10  # same size, one bit flipped
    p1.write_bytes(bytes(data))
    capsys.readouterr()
    generate_dataset(out, sampler(), 9, shard_size=3, batch_size=3, progress=False, verify=False)
    err = capsys.readouterr().err
    assert "shard-000000.safetensors" in err and "truncated" in err and "shard-000001" not in err
    assert shard_hashes(out)["shard-000000.safetensors"] == ref["shard-000000.safetensors"]
    assert shard_hashes(out)["shard-000001.safetensors"] != ref["shard-000001.safetensors"]  # size check only
    m = generate_dataset(out, sampler(), 9, shard_size=3, batch_size=3, progress=False)  # default: verify
    err = capsys.readouterr().err
    assert "shard-000001.safetensors: sha256 differs" in err and "generating shard 1 again" in err
    assert shard_hashes(out) == ref and m["complete"]
    assert [s["sha256"] for s in m["shards"]] == [ref[p] for p in sorted(ref)]


def test_progress_goes_to_stderr_in_whole_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBAUG_QUIET", raising=False)
    generate_dataset(tmp_path / "p", sampler(), 20, shard_size=10, batch_size=2, progress=True)
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert cap.out == "" and "\r" not in cap.err
    assert 2 <= len(lines) <= 12 and all(line.startswith("generate (rank 0 of 1)") for line in lines)
    assert "20/20" in lines[-1]
