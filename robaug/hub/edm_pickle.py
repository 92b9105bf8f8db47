"""Read NVIDIA EDM ``.pkl`` snapshots without running any code they carry.

EDM pickles its networks through ``torch_utils.persistence``: each module is a record
``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the class name, the module's Python source (which
EDM's own loader ``exec``\\ s) and the module state (``_init_kwargs``, ``_parameters``, ``_buffers``,
``_modules``). Tensors are ``_rebuild_tensor_v2`` over storages stored as nested ``torch.save`` byte strings.

:func:`read_edm_pickle` uses a restricted unpickler: the only globals it resolves are replaced by inert local
functions and classes (records, tensors via ``torch.load(weights_only=True)``, plain containers, numeric numpy
scalars). The embedded source is never imported or executed; any other global is refused with
:class:`UnsafePickleError` naming it.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EDMCheckpoint", "UnsafePickleError", "read_edm_pickle"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that robaug's EDM reader does not allow (it is never imported)."""


@dataclass
class EDMCheckpoint:
    """One network of an EDM snapshot: its preconditioner class, constructor keywords and weights."""

    class_name: str
    init_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)


class _ModuleRecord:
    """Inert stand-in for a pickled ``nn.Module`` (a persistence record or a plain ``ModuleDict``)."""

    def __init__(self, class_name: str, state: Any) -> None:
        self.class_name = class_name
        self._set(state)

    def _set(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"EDM pickle: state of {self.class_name} is {type(state).__name__}, "
                                         "not a dict")
        self.init_args = state.get("_init_args") or ()
        self.init_kwargs = state.get("_init_kwargs") or {}
        self.parameters = state.get("_parameters") or {}
        self.buffers = state.get("_buffers") or {}
        self.non_persistent = set(state.get("_non_persistent_buffers_set") or ())
        self.submodules = state.get("_modules") or {}


class _ModuleDictRecord(_ModuleRecord):
    """``torch.nn.ModuleDict`` as unpickled by NEWOBJ + BUILD."""

    def __new__(cls, *args: Any) -> _ModuleDictRecord:
        obj = object.__new__(cls)
        obj.class_name = "ModuleDict"
        obj._set({})
        return obj

    def __init__(self, *args: Any) -> None:  # pragma: no cover - NEWOBJ never calls __init__
        pass

    def __setstate__(self, state: Any) -> None:
        self._set(state)


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` (a dict subclass EDM uses for option dicts), read as a plain dict."""

    def __setstate__(self, state: Any) -> None:
        if state:
            raise pickle.UnpicklingError("EDM pickle: an EasyDict with instance attributes")


def _reconstruct_persistent_obj(meta: Any) -> _ModuleRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("EDM pickle: malformed persistence record "
                                     "(expected type='class' and a class_name)")
    # meta["module_src"] is deliberately ignored: it is code, and nothing here runs it.
    return _ModuleRecord(meta["class_name"], meta.get("state"))


def _load_storage(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("EDM pickle: a storage record that is not a byte string")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
        try:
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's weights-only unpickler refused something
            raise UnsafePickleError(f"refused a storage record (torch.load(weights_only=True) says: {err})") from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"EDM pickle: a storage record holds {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("EDM pickle: a tensor over something that is not a typed storage")
    if backward_hooks:
        raise pickle.UnpicklingError("EDM pickle: a tensor with backward hooks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.empty(0, dtype=storage.dtype)
        return t.set_(storage._untyped_storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None, state: Any = None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("EDM pickle: a parameter record without a tensor")
    if backward_hooks or state:
        raise pickle.UnpicklingError("EDM pickle: a parameter with backward hooks or extra state")
    return data


class _NumpyDtype:
    """``numpy.dtype`` for numeric types only (bool, int, uint, float, complex); BUILD sets the byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str):
            raise pickle.UnpicklingError("EDM pickle: a numpy dtype that is not named by a string")
        dt = np.dtype(name)
        if dt.kind not in "biufc":
            raise pickle.UnpicklingError(f"EDM pickle: numpy dtype {name!r} is not numeric")
        self.dtype = dt

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | complex | bool:
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("EDM pickle: a numpy scalar that is not a numeric value")
    if len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("EDM pickle: a numpy scalar of the wrong size")
    return np.frombuffer(bytes(data), dtype=dtype.dtype)[0].item()


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDictRecord,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global {module}.{name}: robaug reads EDM pickles without importing anything they name "
                "(only tensors, storages, containers, numpy numbers and EDM persistence records are allowed). "
                "This is not an EDM network snapshot, or it needs code robaug will not run."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id in an EDM pickle (EDM snapshots have none)")


def _plain(value: Any, where: str) -> Any:
    """Init kwargs as JSON-able Python values (tuples -> lists); anything else is an error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"EDM pickle: {where} has non-string keys")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"EDM pickle: {where} holds a {type(value).__name__}, not a plain value")


def _flatten(record: _ModuleRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for group in (record.parameters, record.buffers):
        if not isinstance(group, dict):
            raise ValueError(f"EDM pickle: {prefix or 'the network'} has malformed parameters/buffers")
        for name, t in group.items():
            if t is None or (group is record.buffers and name in record.non_persistent):
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"EDM pickle: {prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    if not isinstance(record.submodules, dict):
        raise ValueError(f"EDM pickle: {prefix or 'the network'} has malformed submodules")
    for name, sub in record.submodules.items():
        if sub is None:
            continue
        if not isinstance(sub, _ModuleRecord):
            raise ValueError(f"EDM pickle: submodule {prefix}{name} is a {type(sub).__name__}, not a module record")
        _flatten(sub, f"{prefix}{name}.", out)


# EDM's preconditioners all start with these positional parameters.
_PRECOND_POSITIONAL = ("img_resolution", "img_channels", "label_dim", "use_fp16")


def read_edm_pickle(path: str | Path, key: str = "ema") -> EDMCheckpoint:
    """Read network ``key`` (``"ema"`` in EDM's training snapshots) of an EDM ``.pkl`` without running its code.

    Returns the preconditioner's class name (``"VPPrecond"``, ``"VEPrecond"``, ``"EDMPrecond"``), its recorded
    ``init_kwargs`` (numpy numbers as Python numbers) and its state dict (``model.enc.16x16_conv.weight``, ...).
    Raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError``) for any global outside the allow-list, and
    ``ValueError`` when the file is not an EDM snapshot.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            data = _RestrictedUnpickler(f).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                RuntimeError) as err:
            raise ValueError(f"{path} is not a readable EDM pickle ({type(err).__name__}: {err})") from None
    if isinstance(data, _ModuleRecord):
        net = data
    elif isinstance(data, dict):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} entry; it holds {sorted(map(str, data))}")
        net = data[key]
    else:
        raise ValueError(f"{path} holds a {type(data).__name__}, not an EDM snapshot dict")
    if not isinstance(net, _ModuleRecord) or isinstance(net, _ModuleDictRecord):
        raise ValueError(f"{path}: entry {key!r} is not an EDM network record")
    args = _plain(list(net.init_args), "init_args")
    if len(args) > len(_PRECOND_POSITIONAL):
        raise ValueError(f"{path}: {net.class_name} was built with {len(args)} positional arguments; expected <= 4")
    kwargs = _plain(dict(net.init_kwargs), "init_kwargs")
    kwargs.update(zip(_PRECOND_POSITIONAL, args))
    state: dict[str, torch.Tensor] = {}
    _flatten(net, "", state)
    if not state:
        raise ValueError(f"{path}: network {key!r} ({net.class_name}) has no weights")
    return EDMCheckpoint(class_name=net.class_name, init_kwargs=kwargs, state_dict=state)
