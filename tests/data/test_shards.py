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


def _folder(tmp_path, n=12, shard_size=4):
    imgs = np.random.default_rng(2).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    write_npz(tmp_path / "a.npz", imgs, np.arange(n))
    npz_to_shards(tmp_path / "a.npz", tmp_path / "sh", shard_size=shard_size)
    return tmp_path / "sh"


def test_verify_catches_a_flipped_bit_in_every_reader(tmp_path):
    root = _folder(tmp_path)
    shard = root / "shards" / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0x01  # one bit of the array data (safetensors puts the arrays after the header)
    shard.write_bytes(bytes(data))
    # unverified readers return the flipped pixel as is (that is what verify= is for) ...
    assert len(load_shards(root)[0]) == 12 and ShardDataset(root)[5] is not None
    # ... verified ones refuse the shard, naming it
    ds = ShardDataset(root, verify=True)
    assert int(ds[0][1]) == 0  # intact shard 0 reads fine
    with pytest.raises(ValueError, match=r"shard-000001\.safetensors: sha256 mismatch"):
        ds[5]
    with pytest.raises(ValueError, match=r"shard-000001\.safetensors.*sha256 mismatch"):
        list(ShardStream(root, verify=True))
    with pytest.raises(ValueError, match=r"shard-000001\.safetensors.*rerunning"):
        load_shards(root, verify=True)
    assert len(list(ShardStream(root))) == 12


def test_verify_without_checksums_in_the_manifest_is_an_error_not_a_pass(tmp_path):
    import json

    root = _folder(tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    for s in m["shards"]:
        del s["sha256"]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="no sha256"):
        ShardDataset(root, verify=True)[0]
    with pytest.raises(ValueError, match="no sha256"):
        list(ShardStream(root, verify=True))
    assert len(list(ShardStream(root))) == 12


def test_a_truncated_shard_is_named_with_the_fix(tmp_path):
    root = _folder(tmp_path)
    shard = root / "shards" / "shard-000002.safetensors"
    shard.write_bytes(shard.read_bytes()[:40])
    for read in (lambda: ShardDataset(root)[9], lambda: list(ShardStream(root)), lambda: load_shards(root),
                 lambda: read_shard(shard)):
        with pytest.raises(ValueError, match=r"shard-000002\.safetensors: cannot read this shard .*truncated") as err:
            read()
        assert "robaug generate" in str(err.value)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-000002\.safetensors: shard file missing"):
        ShardDataset(root)[9]


def test_files_get_the_users_umask(tmp_path):
    import os
    import stat

    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            root = _folder(tmp_path / oct(mask))
        finally:
            os.umask(old)
        for p in [root / "manifest.json", *sorted((root / "shards").iterdir())]:
            assert stat.S_IMODE(p.stat().st_mode) == mode, (p, oct(p.stat().st_mode))
