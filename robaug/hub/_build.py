"""Build a denoiser from files on disk: safetensors state dict + diffusers UNet2DModel config + scheduler config.

Only ``safetensors.torch.load_file`` ever reads weights here; pickle-based formats are refused by name.
Local inputs understood by :func:`resolve_local`:

* ``model.safetensors`` with a robaug ``model.json`` next to it
  (``{"unet": ..., "scheduler": ..., "null_label": ...}``);
* a diffusers model folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (+ optional
  ``scheduler_config.json`` or ``scheduler/scheduler_config.json``);
* a diffusers pipeline folder: ``unet/`` and ``scheduler/`` subfolders;
* a folder holding exactly one ``X.safetensors`` + ``X.json`` pair.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from robaug._core.io import sha256_file

from ._download import UnsafeWeightsError
from .registry import _DDPM_SCHEDULER

__all__ = ["UnsafeWeightsError", "ModelSpec", "resolve_local", "read_robaug_json", "build_denoiser",
           "load_state_dict_safetensors", "PICKLE_SUFFIXES"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar", ".npz")
_WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
_DEFAULT_SCHEDULER = _DDPM_SCHEDULER  # assumed when a model folder has no scheduler config
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _unsafe_message(path: Path) -> str:
    return (
        f"refusing to load {path}: {path.suffix or 'this'} checkpoints are Python pickles, and unpickling a file "
        "can run arbitrary code. robaug loads weights only from .safetensors. If you trust this file, convert it "
        "once yourself:\n"
        "    python -c \"import torch, safetensors.torch as st; "
        f"st.save_file(torch.load('{path}', map_location='cpu', weights_only=True), "
        f"'{path.with_suffix('.safetensors')}')\"\n"
        "and load the .safetensors file (keep config.json / the .json config next to it)."
    )


@dataclass
class ModelSpec:
    """Everything needed to build a denoiser: where the weights are and which architecture/schedule they use."""

    weights: Path
    unet_config: Mapping[str, Any]
    scheduler_config: Mapping[str, Any]
    null_label: int | None = None
    sha256: str | None = None
    origin: str = ""
    num_classes: int | None = None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"could not read the JSON config {path}: {err}") from None


def read_robaug_json(path: Path) -> dict:
    """A robaug config JSON: ``{"unet": {...}, "scheduler": {...}, "null_label": int|None, ...}``."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("unet"), dict):
        raise ValueError(
            f'{path} is not a robaug weights config: expected a JSON object with a "unet" key holding a '
            'diffusers UNet2DModel config (plus "scheduler" and optionally "null_label")'
        )
    return data


def _scheduler_for(model_dir: Path) -> Mapping[str, Any]:
    for cand in (model_dir / "scheduler_config.json",
                 model_dir / "scheduler" / "scheduler_config.json",
                 model_dir.parent / "scheduler" / "scheduler_config.json"):
        if cand.is_file():
            return _read_json(cand)
    warnings.warn(
        f"no scheduler_config.json found for {model_dir}; assuming the DDPM training schedule "
        "(linear betas 1e-4..0.02, T=1000, epsilon prediction). Put a scheduler_config.json next to "
        "config.json if the model used another schedule.",
        stacklevel=4,
    )
    return dict(_DEFAULT_SCHEDULER)


def _model_folder_spec(model_dir: Path, weights: Path | None = None) -> ModelSpec:
    cfg_path = model_dir / "config.json"
    cfg = _read_json(cfg_path)
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"{cfg_path} describes a {cls}; robaug builds diffusers UNet2DModel checkpoints only")
    if weights is None:
        weights = next((model_dir / n for n in _WEIGHTS_NAMES if (model_dir / n).is_file()), None)
    if weights is None:
        pickled = [p for p in sorted(model_dir.iterdir()) if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickled:
            raise UnsafeWeightsError(_unsafe_message(pickled[0]))
        raise FileNotFoundError(f"{model_dir} has config.json but no diffusion_pytorch_model.safetensors")
    return ModelSpec(weights, cfg, _scheduler_for(model_dir), cfg.get("null_label"), origin=str(model_dir))


def _json_pair_spec(weights: Path, cfg_path: Path) -> ModelSpec:
    data = read_robaug_json(cfg_path)
    return ModelSpec(weights, data["unet"], data.get("scheduler") or dict(_DEFAULT_SCHEDULER),
                     data.get("null_label"), data.get("sha256"), origin=str(weights),
                     num_classes=data.get("num_classes"))


def resolve_local(path: str | os.PathLike) -> ModelSpec:
    """Work out weights + configs for a local file or folder (see module docstring)."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeWeightsError(_unsafe_message(p))
        if p.suffix.lower() != ".safetensors":
            raise ValueError(f"{p}: expected a .safetensors file or a model folder, "
                             f"not a {p.suffix or 'extensionless'} file")
        if p.with_suffix(".json").is_file():
            return _json_pair_spec(p, p.with_suffix(".json"))
        if (p.parent / "config.json").is_file():
            return _model_folder_spec(p.parent, weights=p)
        raise FileNotFoundError(
            f"found no architecture config for {p}: put {p.with_suffix('.json').name} "
            '({"unet": <UNet2DModel config>, "scheduler": <DDPMScheduler config>, "null_label": ...}) next to '
            "it, or a diffusers config.json in the same folder"
        )
    if p.is_dir():
        if (p / "config.json").is_file():
            return _model_folder_spec(p)
        if (p / "unet" / "config.json").is_file():
            return _model_folder_spec(p / "unet")
        pairs = [w for w in sorted(p.glob("*.safetensors")) if w.with_suffix(".json").is_file()]
        if len(pairs) == 1:
            return _json_pair_spec(pairs[0], pairs[0].with_suffix(".json"))
        pickled = [q for q in sorted(p.iterdir()) if q.suffix.lower() in PICKLE_SUFFIXES]
        if pickled:
            raise UnsafeWeightsError(_unsafe_message(pickled[0]))
        raise FileNotFoundError(
            f"{p} is not a model folder robaug understands: expected config.json + "
            "diffusion_pytorch_model.safetensors, a pipeline folder with unet/ (and scheduler/), or one "
            "X.safetensors with its X.json"
        )
    raise FileNotFoundError(f"no such file or folder: {p}")


def load_state_dict_safetensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (optionally checking its sha256) into CPU tensors."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(_unsafe_message(path))
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise ValueError(
                f"sha256 mismatch for {path}: expected {sha256.lower()}, got {actual}. The file is corrupt or not "
                "the one the config describes; delete it (if it is in the robaug cache it is downloaded again)."
            )
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for bad headers / truncation
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}). If it is in the robaug cache, delete it and "
            "load again to re-download."
        ) from None


def _rename_legacy_attention(state: dict[str, torch.Tensor], expected: set[str]) -> None:
    """Old diffusers checkpoints name attention projections query/key/value/proj_attn; map them to
    to_q/to_k/to_v/to_out.0 (a pure key rename, done only when the new key is one the model expects)."""
    for key in [k for k in state if k not in expected]:
        prefix, _, rest = key.rpartition(".")  # rest = weight | bias
        head, _, name = prefix.rpartition(".")
        if name in _LEGACY_ATTENTION:
            new = f"{head}.{_LEGACY_ATTENTION[name]}.{rest}"
            if new in expected and new not in state:
                state[new] = state.pop(key)


def _build_unet(unet_config: Mapping[str, Any], state: dict[str, torch.Tensor], dtype: torch.dtype, origin: str):
    from diffusers import UNet2DModel

    cfg = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    with torch.device("meta"):  # no random init of weights that are overwritten anyway
        unet = UNet2DModel.from_config(cfg)
    expected = set(unet.state_dict().keys())
    _rename_legacy_attention(state, expected)
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"the weights in {origin} do not fit the UNet2DModel config: {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}. Check that the config belongs "
            "to these weights."
        )
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"the weights in {origin} do not fit the UNet2DModel config: {err}") from None
    if any(t.is_meta for t in itertools.chain(unet.parameters(), unet.buffers())):  # pragma: no cover
        # a buffer that is not part of the state dict: build normally instead
        unet = UNet2DModel.from_config(cfg).to(dtype)
        unet.load_state_dict(state, strict=True)
    return unet.eval().requires_grad_(False)


def build_denoiser(spec: ModelSpec, *, device=None, dtype: torch.dtype | None = None, null_label: int | None = None):
    """``UNet2DModel.from_config`` + safetensors state dict (strict) wrapped in ``DiffusersDenoiser``."""
    from robaug.diffusion import DiffusersDenoiser

    state = load_state_dict_safetensors(spec.weights, spec.sha256)
    unet = _build_unet(spec.unet_config, state, dtype or torch.float32, spec.origin or str(spec.weights))
    label = null_label if null_label is not None else spec.null_label
    num_classes = spec.num_classes if null_label is None else None  # an override re-derives it
    denoiser = DiffusersDenoiser(unet, dict(spec.scheduler_config), null_label=label, num_classes=num_classes)
    if device is not None:
        denoiser = denoiser.to(device)
    return denoiser
