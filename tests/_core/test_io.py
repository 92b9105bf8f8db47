"""robaug._core.io: atomic writes (old file intact on error, no temporary left, the user's umask), sha256 against
hashlib, and sweeping of stale robaug temporaries only."""

import hashlib
import os
import stat
import time

import pytest
import torch

from robaug._core import io


@pytest.fixture
def umask():
    """Set a umask for one test and restore the process's own afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if io.TMP_MARK in p.name]


def test_atomic_path_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert io.TMP_MARK in tmp.name and tmp.suffix == ".bin"  # np.savez / torch.save look at the suffix
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not visible until the block ends
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"complete old file")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a ne")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"complete old file"
    assert _leftovers(tmp_path) == []


def test_atomic_path_with_nothing_written_raises_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with io.atomic_path(target):
            pass
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_temporary_names_are_unique(tmp_path):
    with io.atomic_path(tmp_path / "x.pt") as a, io.atomic_path(tmp_path / "x.pt") as b:
        assert a != b
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert (tmp_path / "x.pt").read_bytes() == b"a"  # the outer block finished last
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_new_files_get_0o666_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert io.default_file_mode() == 0o666 & ~mask
    assert os.umask(mask) == mask  # default_file_mode() restored the umask it read
    for write in (lambda p: io.atomic_write_bytes(p, b"x"), lambda p: io.atomic_write_text(p, "x"),
                  lambda p: io.atomic_save(p, lambda f: torch.save({"a": 1}, f))):
        target = tmp_path / f"f{len(list(tmp_path.iterdir()))}.pt"
        write(target)
        assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_write_helpers_round_trip_and_create_parents(tmp_path):
    io.atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"\x00\xff")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"\x00\xff"
    io.atomic_write_text(tmp_path / "t.json", "héllo\n")
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == "héllo\n"
    io.atomic_save(tmp_path / "s.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], torch.arange(3))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 1024 + 5])
def test_sha256_file_matches_hashlib(tmp_path, size):
    data = os.urandom(size)
    p = tmp_path / "blob"
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert io.sha256_file(p) == want
    assert io.sha256_file(str(p), chunk=7) == want  # many chunks, a short last one


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_sweep_removes_only_old_robaug_temporaries(tmp_path):
    old_tmp = tmp_path / f".model.abc123{io.TMP_MARK}.pt"
    fresh_tmp = tmp_path / f".model.def456{io.TMP_MARK}.pt"  # a live writer's file
    old_other = tmp_path / "model.pt"
    old_lookalike = tmp_path / ".model.abc.part"  # someone else's temporary
    sub = tmp_path / "sub"
    sub.mkdir()
    old_nested = sub / f".x.0{io.TMP_MARK}"
    dir_with_mark = tmp_path / f"d{io.TMP_MARK}"
    dir_with_mark.mkdir()
    for p in (old_tmp, fresh_tmp, old_other, old_lookalike, old_nested):
        p.write_bytes(b"x")
    for p in (old_tmp, old_other, old_lookalike, old_nested, dir_with_mark):
        _age(p, 7200)

    assert io.sweep_temporaries(tmp_path, older_than=3600) == 1
    assert not old_tmp.exists()
    assert fresh_tmp.exists() and old_other.exists() and old_lookalike.exists()
    assert old_nested.exists() and dir_with_mark.is_dir()

    assert io.sweep_temporaries(tmp_path, older_than=3600, recursive=True) == 1
    assert not old_nested.exists() and fresh_tmp.exists() and dir_with_mark.is_dir()
    assert io.sweep_temporaries(tmp_path, older_than=0) == 1  # now the fresh one counts as stale too
    assert not fresh_tmp.exists()


def test_sweep_of_a_missing_folder_is_a_no_op(tmp_path):
    assert io.sweep_temporaries(tmp_path / "nope") == 0


def test_sweep_finds_what_atomic_path_leaves_after_a_kill(tmp_path):
    # a killed process never runs the cleanup; simulate by writing the temporary and abandoning the block
    cm = io.atomic_path(tmp_path / "shard.safetensors")
    tmp = cm.__enter__()
    tmp.write_bytes(b"partial")
    _age(tmp, 7200)
    assert io.sweep_temporaries(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []
