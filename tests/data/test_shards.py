"""The shard-dataset format (robaug.data.shards): shards whose bytes depend only on their content, random access and
streaming readers, and DM-Improves-AT's npz files."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robaug._core.io import TMP_MARK
from robaug.data.shards import (
    ShardDataset,
    ShardStream,
    load_shards,
    npz_to_shards,
    read_npz,
    read_shard,
    sha256_file,
    shards_to_npz,
    write_npz,
    write_shard,
)


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
    assert not list(tmp_path.glob(f"*{TMP_MARK}*"))


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
