"""Rebuild the classifier a ``robaug train`` run wrote (run folder, ``model.safetensors`` or ``checkpoint.pt``),
without unpickling anything: weights through safetensors or ``torch.load(weights_only=True)``, the architecture
from the run's ``config.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_trained_model"]


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, Path]:
    """Rebuild a ``robaug train`` run's classifier (it takes [0, 1] images) from a run folder, its
    ``model.safetensors`` or its ``checkpoint.pt``. Returns ``(model in eval mode, TrainConfig, run folder)``."""
    from robaug.data.datasets import load_dataset
    from robaug.recipes.train import TrainConfig, build_model

    p = Path(path)
    run = p if p.is_dir() else p.parent
    if p.is_dir():
        weights = run / "model.safetensors"
        if not weights.is_file():
            ck = run / "checkpoint.pt"
            if not ck.is_file():
                raise FileNotFoundError(f"{run}: no model.safetensors or checkpoint.pt; is it a `robaug train` run "
                                        "folder? (Other models: use robaug.eval.report(model, ...) from Python)")
            weights = ck
    elif p.is_file():
        weights = p
    else:
        raise FileNotFoundError(f"{p} does not exist")
    state: dict[str, torch.Tensor]
    cfg_dict: dict[str, Any] | None = None
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    elif weights.suffix in (".pt", ".pth"):
        ck = torch.load(weights, map_location="cpu", weights_only=True)  # never unpickles code
        cfg_dict = ck.get("config")
        ema = ck.get("ema")
        if ema:
            state = {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
        else:
            state = ck["model"]
    else:
        raise ValueError(f"{weights}: expected a run folder, model.safetensors or checkpoint.pt")
    if cfg_dict is None:
        for name in ("config.json", "results.json"):
            f = run / name
            if f.is_file():
                d = json.loads(f.read_text())
                cfg_dict = d.get("config", d) if name == "results.json" else d
                break
    if cfg_dict is None:
        raise FileNotFoundError(f"{run}: no config.json / results.json next to the weights, so the architecture is "
                                "unknown; rebuild the model in Python and call robaug.eval.report(model, ...)")
    cfg = TrainConfig.from_dict(cfg_dict)
    _, info = load_dataset(cfg.dataset, cfg.data_root, train=False, img_size=cfg.img_size)
    model = build_model(cfg, info)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, run
