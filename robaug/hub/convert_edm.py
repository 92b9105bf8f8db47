"""Convert NVIDIA EDM ``.pkl`` snapshots to ``model.safetensors`` + ``config.json`` and load such folders.

The converted folder's ``config.json`` is ``{"format": "robaug-converted", "family": "edm", "class_name":
"VPPrecond", "init_kwargs": {...}}`` (EDM's own keyword names), so a fine-tuned EDM model converts the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.shards import atomic_write_bytes
from ..diffusion.adapters import EDMDenoiser
from .edm_pickle import read_edm_pickle

__all__ = ["convert_edm_pickle", "edm_config", "load_edm_folder"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def edm_config(class_name: str, init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a converted EDM model."""
    return {"format": "robaug-converted", "family": "edm", "class_name": class_name, "init_kwargs": dict(init_kwargs)}


def convert_edm_pickle(src: str | Path, dst: str | Path) -> Path:
    """Convert the ``ema`` network of EDM snapshot ``src`` (read without running its code, see
    :func:`~robaug.hub.edm_pickle.read_edm_pickle`) into folder ``dst``; return ``dst``.

    The network is built and loaded once before anything is written, so a snapshot robaug cannot run is
    refused here rather than at load time. Both files are written atomically with the user's umask.
    """
    from safetensors.torch import save

    from ..diffusion.nets.edm import build_edm_denoiser

    src, dst = Path(src), Path(dst)
    ckpt = read_edm_pickle(src)
    build_edm_denoiser(ckpt.class_name, ckpt.init_kwargs, ckpt.state_dict)  # fails loudly if it does not fit
    config = edm_config(ckpt.class_name, ckpt.init_kwargs)
    state = {k: v.detach().contiguous() for k, v in ckpt.state_dict.items()}
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    atomic_write_bytes(dst / CONFIG_NAME, (json.dumps(config, indent=1, sort_keys=True) + "\n").encode())
    return dst


def load_edm_folder(folder: str | Path, config: Mapping[str, Any] | None = None) -> EDMDenoiser:
    """The denoiser of a converted EDM folder (``model.safetensors`` + ``config``, default: its ``config.json``),
    in eval mode with ``requires_grad=False``.

    Also reads a single ``.safetensors`` file in the test-fixture layout (``net.<key>`` = the preconditioner's
    state dict) when ``config`` is given.
    """
    from ..diffusion.nets.edm import build_edm_denoiser
    from ._build import load_state_dict_safetensors

    folder = Path(folder)
    weights = folder if folder.is_file() else folder / WEIGHTS_NAME
    if config is None:
        if folder.is_file():
            raise ValueError(f"{folder}: pass config=... (class_name and init_kwargs) for a bare safetensors file")
        config = json.loads((folder / CONFIG_NAME).read_text())
    if config.get("family", "edm") != "edm" or "class_name" not in config or "init_kwargs" not in config:
        raise ValueError(
            f"{folder}: config must name family 'edm', class_name and init_kwargs, got keys {sorted(config)}"
        )
    state = load_state_dict_safetensors(weights)
    if any(k.startswith("net.") for k in state):  # fixture layout: net.<precond key> beside the test tensors
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return build_edm_denoiser(config["class_name"], config["init_kwargs"], state)
