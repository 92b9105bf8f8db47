"""EDM .pkl snapshots: read without running their code, converted to safetensors, loaded as denoisers.

Real-format pickles come from /work/shared/fixtures/edm (made by NVlabs/edm's own pickle.dump; see its README).
Malicious ones are made here: a ``__reduce__`` calling ``os.system``, ``builtins.eval``, an EDM persistence
record whose embedded module source writes a file, and a nested storage holding a code-running pickle.
"""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import stat
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import EDM_CONFIGS as CONFIGS  # noqa: E402 - the shared fixtures (edm_fixtures: tests/conftest.py)
from torch import nn

from robaug.diffusion.nets import build_edm_denoiser
from robaug.hub.convert_edm import convert_edm_pickle, load_edm_folder
from robaug.hub.edm_pickle import UnsafePickleError, read_edm_pickle

# ------------------------------------------------------------------------------------------------------------
# the real-format fixtures


@pytest.mark.parametrize("name", CONFIGS)
def test_reads_edm_snapshot_like_edm_itself(edm_fixtures, name):
    from safetensors.torch import load_file

    info = json.loads((edm_fixtures / "index.json").read_text())[name]
    ckpt = read_edm_pickle(edm_fixtures / f"{name}.pkl")
    assert ckpt.class_name == info["precond"]
    assert ckpt.init_kwargs == info["init_kwargs"]
    assert all(type(v) in (int, float, str, list, bool) for v in ckpt.init_kwargs.values())  # no numpy scalars
    ref = {k[len("net."):]: v for k, v in load_file(str(edm_fixtures / f"{name}.safetensors")).items()
           if k.startswith("net.")}
    assert ckpt.state_dict.keys() == ref.keys()
    assert all(torch.equal(ckpt.state_dict[k], ref[k]) for k in ref)
    with pytest.raises(ValueError, match="no 'net' entry.*augment_pipe.*ema"):
        read_edm_pickle(edm_fixtures / f"{name}.pkl", key="net")


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_pickle_convert_load_reproduces_edm(edm_fixtures, name, tmp_path):
    from safetensors.torch import load_file

    info = json.loads((edm_fixtures / "index.json").read_text())[name]
    t = load_file(str(edm_fixtures / f"{name}.safetensors"))
    old = os.umask(0o027)
    try:
        dst = convert_edm_pickle(edm_fixtures / f"{name}.pkl", tmp_path / "converted")
    finally:
        os.umask(old)
    assert dst == tmp_path / "converted"
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    for p in dst.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    config = json.loads((dst / "config.json").read_text())
    assert config == {"format": "robaug-converted", "family": "edm", "class_name": info["precond"],
                      "init_kwargs": info["init_kwargs"]}
    d = load_edm_folder(dst, config)
    labels = t["labels"] if info["label_dim"] else None
    err = ((d(t["x"], t["sigma"], labels) - t["out"]).abs().amax(dim=(1, 2, 3)) / t["sigma"].clamp(min=1)).max()
    assert float(err) <= 1e-5
    assert not d.training and not any(p.requires_grad for p in d.parameters())


# ------------------------------------------------------------------------------------------------------------
# EDM-format pickles made here, with a live payload in every record's module source


def _fake_edm_persistence(monkeypatch) -> types.FunctionType:
    """Install a stand-in ``torch_utils.persistence`` whose loader does what EDM's does: exec the module source."""

    def _reconstruct_persistent_obj(meta):
        exec(meta["module_src"], {})  # noqa: S102 - EDM's behaviour, used here only to prove the payload is live
        return meta["class_name"]

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod = types.ModuleType("torch_utils.persistence")
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return _reconstruct_persistent_obj


class _Record:
    """Pickles a module the way EDM's persistence does: a record (class name, source, state) per module, with
    ModuleDicts as plain NEWOBJ + BUILD objects whose children are records."""

    def __init__(self, module: nn.Module, reconstruct, src: str, init_kwargs=None, class_name=None) -> None:
        self.module, self.reconstruct, self.src = module, reconstruct, src
        self.init_kwargs, self.class_name = init_kwargs or {}, class_name or type(module).__name__

    def _state(self) -> dict:
        m = self.module
        return {
            "training": False,
            "_parameters": {k: (None if v is None else nn.Parameter(v.detach().clone()))
                            for k, v in m._parameters.items()},
            "_buffers": {k: (None if v is None else v.detach().clone()) for k, v in m._buffers.items()},
            "_modules": {k: (_DictRecord if isinstance(c, nn.ModuleDict) else _Record)(c, self.reconstruct, self.src)
                         for k, c in m._modules.items()},
            "_init_args": (),
            "_init_kwargs": self.init_kwargs,
        }

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.src, class_name=self.class_name, state=self._state())
        return self.reconstruct, (meta,)


class _DictRecord(_Record):
    """A ModuleDict pickles as torch's class itself (NEWOBJ + BUILD); pickle checks ``__class__`` for that."""

    @property
    def __class__(self):
        return nn.ModuleDict

    def __reduce__(self):
        return copyreg.__newobj__, (nn.ModuleDict,), self._state()


def _edm_format_pickle(monkeypatch, marker: Path) -> tuple[bytes, dict, dict]:
    kwargs = dict(img_resolution=8, img_channels=3, label_dim=4, model_type="SongUNet", model_channels=16,
                  channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], embedding_type="fourier",
                  encoder_type="skip", decoder_type="skip", channel_mult_noise=2, resample_filter=[1, 3, 3, 1])
    den = build_edm_denoiser("VEPrecond", dict(kwargs, dropout=0.0))
    precond = nn.Module()
    precond.model = den.net
    payload = f"open({str(marker)!r}, 'w').write('pwned')\n"
    reconstruct = _fake_edm_persistence(monkeypatch)
    recorded = dict(kwargs, dropout=np.float64(0.0))  # EDM records numpy numbers
    snapshot = {"ema": _Record(precond, reconstruct, payload, recorded, "VEPrecond"), "augment_pipe": None,
                "dataset_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "x"}}
    blob = pickle.dumps(snapshot, protocol=3)
    state = {k: v.clone() for k, v in precond.state_dict().items()}
    return blob, dict(kwargs, dropout=0.0), state


def test_embedded_module_source_is_never_run(monkeypatch, tmp_path):
    marker = tmp_path / "marker"
    blob, kwargs, state = _edm_format_pickle(monkeypatch, marker)
    # The payload is live: EDM's way of loading (exec of module_src) runs it.
    pickle.loads(blob)
    assert marker.read_text() == "pwned"
    marker.unlink()
    # robaug's reader: same network, nothing run. numpy 1.x names its scalar numpy.core.multiarray.scalar, numpy 2
    # numpy._core.multiarray.scalar; whichever numpy is installed, both spellings are read.
    new_name, old_name = b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"
    assert new_name in blob or old_name in blob
    for i, data in enumerate([blob.replace(old_name, new_name), blob.replace(new_name, old_name)]):
        src = tmp_path / f"snapshot{i}.pkl"
        src.write_bytes(data)
        ckpt = read_edm_pickle(src)
        assert (ckpt.class_name, ckpt.init_kwargs) == ("VEPrecond", kwargs)
        assert type(ckpt.init_kwargs["dropout"]) is float
        assert ckpt.state_dict.keys() == state.keys()
        assert all(torch.equal(ckpt.state_dict[k], state[k]) for k in state)
        load_edm_folder(convert_edm_pickle(src, tmp_path / f"out{i}"))
    assert not marker.exists()


class _Evil:
    def __init__(self, fn, arg) -> None:
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "nested in a record"])
def test_code_running_globals_are_refused_by_name(kind, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    if kind == "os.system":
        obj, name = {"ema": _Evil(os.system, f"touch {marker}")}, f"{os.system.__module__}.system"
    elif kind == "builtins.eval":
        obj, name = _Evil(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"
    else:  # a valid persistence record whose init_kwargs hide an os.system call
        reconstruct = _fake_edm_persistence(monkeypatch)
        rec = _Record(nn.Linear(2, 2), reconstruct, "", {"x": _Evil(os.system, f"touch {marker}")}, "VPPrecond")
        obj, name = {"ema": rec}, f"{os.system.__module__}.system"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(UnsafePickleError, match=f"refused global {name}") as info:
        read_edm_pickle(src)
    assert isinstance(info.value, pickle.UnpicklingError)
    with pytest.raises(UnsafePickleError, match=name):
        convert_edm_pickle(src, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_storage_bytes_are_loaded_weights_only(tmp_path):
    """A storage record is a nested torch.save byte string: one that holds a code-running pickle is refused."""
    import io

    marker = tmp_path / "marker"
    buf = io.BytesIO()
    torch.save(_Evil(os.system, f"touch {marker}"), buf, _use_new_zipfile_serialization=False)
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"ema": _Evil(torch.storage._load_from_bytes, buf.getvalue())}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        read_edm_pickle(src)
    assert not marker.exists()


def test_not_an_edm_snapshot_is_a_clear_error(tmp_path):
    src = tmp_path / "list.pkl"
    src.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="not an EDM snapshot"):
        read_edm_pickle(src)
    src.write_bytes(pickle.dumps({"ema": {"a": 1}}))
    with pytest.raises(ValueError, match="not an EDM network record"):
        read_edm_pickle(src)
    src.write_bytes(b"\x80\x04\x95")  # truncated
    with pytest.raises(ValueError, match="not a readable EDM pickle"):
        read_edm_pickle(src)
