"""Load folders written by ``robaug convert`` (``model.safetensors`` + ``config.json`` with
``"format": "robaug-converted"``), dispatching on ``config["family"]``: ``"adm"`` -> :class:`ADMDenoiser`,
``"adm-classifier"`` -> :class:`NoisyClassifier`, ``"edm"`` -> ``convert_edm.load_edm_folder``.

Registry entries with ``source="convert"`` (the papers' models, not redistributed as safetensors) are looked
up in ``<cache>/converted/<name>/``, where the command their error message prints puts them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._env import resolve_cache_dir
from .registry import WeightsEntry

if TYPE_CHECKING:  # torch is imported only when a model is built (keeps `robaug download` light)
    import torch

__all__ = ["ConversionRequiredError", "converted_folder", "build_converted", "load_classifier", "conversion_help",
           "converted_cache_dir"]

CONVERTED_FORMAT = "robaug-converted"


class ConversionRequiredError(FileNotFoundError):
    """A registry model that must be converted from its official file first; the message says how."""


def converted_cache_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``robaug convert`` should write the registry model ``name`` so that ``load_denoiser(name)`` finds it."""
    return resolve_cache_dir(cache_dir) / "converted" / name.replace("/", "--")


def conversion_help(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> str:
    """The steps that make a ``source="convert"`` entry loadable."""
    dst = converted_cache_dir(entry.name, cache_dir)
    fname = entry.official_url.rsplit("/", 1)[-1]
    arch = f" --arch {entry.convert_arch}" if entry.convert_arch else ""
    return "\n".join([
        (f"robaug: {entry.name!r} has to be converted once from its official file. robaug ships and downloads no "
         "copy of it (no safetensors copy with a clear licence could be verified)"
         + (f"; {entry.notes}" if entry.notes else "") + f". Licence: {entry.license}."),
        f"    1. download {entry.official_url}" + (f" ({entry.extra['size']})" if "size" in entry.extra else ""),
        f"    2. robaug convert {fname} {dst}{arch}",
        f"Then load_denoiser({entry.name!r}) (or the folder itself) works. Conversion never runs code from the file.",
    ])


def converted_folder(path: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """``(folder, config)`` when ``path`` is a converted folder (or its ``model.safetensors``), else ``None``."""
    p = Path(path).expanduser()
    folder = p.parent if p.is_file() and p.name == "model.safetensors" else p
    cfg_path = folder / "config.json"
    if not (folder.is_dir() and cfg_path.is_file()):
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None  # not ours; the diffusers loader reports a broken config.json
    if not isinstance(cfg, dict) or cfg.get("format") != CONVERTED_FORMAT:
        return None
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} has a robaug-converted config.json but no model.safetensors; convert again")
    return folder, cfg


def _adm_net(folder: Path, cfg: dict[str, Any], dtype: torch.dtype | None) -> torch.nn.Module:
    import torch

    from ._build import load_state_dict_safetensors
    from .convert import build_adm, check_state_dict

    state = load_state_dict_safetensors(folder / "model.safetensors")
    with torch.device("meta"):
        net = build_adm(cfg["family"], cfg["kwargs"])
    check_state_dict(net, state, str(folder))
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def build_converted(folder: Path, cfg: dict[str, Any], *, device=None, dtype: torch.dtype | None = None):
    """The denoiser of a converted folder (see module docstring)."""
    family = cfg.get("family")
    if family == "adm":
        from robaug.diffusion import ADMDenoiser

        denoiser = ADMDenoiser(_adm_net(folder, cfg, dtype), cfg.get("schedule"))
    elif family == "edm":
        from .convert_edm import load_edm_folder

        denoiser = load_edm_folder(folder, cfg)
        if dtype is not None:
            denoiser = denoiser.to(dtype)
    elif family == "adm-classifier":
        raise ValueError(f"{folder} holds an ADM noisy classifier, not a denoiser: load it with "
                         "robaug.hub.load_classifier(...) and pass it as GuidedDiffusion(..., classifier=...)")
    else:
        raise ValueError(f"{folder}/config.json: unknown converted family {family!r} (expected adm, adm-classifier, "
                         "edm); convert it again with this robaug version")
    return denoiser if device is None else denoiser.to(device)


def load_classifier(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, device=None,
                    dtype: torch.dtype | None = None):
    """A converted ADM noisy classifier (folder, or a ``source="convert"`` registry name such as
    ``"adm-imagenet-64-classifier"``) as a :class:`~robaug.diffusion.NoisyClassifier` for classifier guidance."""
    from robaug.diffusion import NoisyClassifier

    found = converted_folder(name_or_path) if os.path.exists(name_or_path) else None
    if found is None and isinstance(name_or_path, str):
        from .registry import get_entry

        try:
            entry = get_entry(name_or_path)
        except KeyError:
            entry = None
        if entry is not None and entry.source == "convert":
            found = converted_folder(converted_cache_dir(entry.name, cache_dir))
            if found is None:
                raise ConversionRequiredError(conversion_help(entry, cache_dir))
    if found is None:
        raise FileNotFoundError(f"{name_or_path!r} is neither a folder written by `robaug convert` nor a registry "
                                "classifier that must be converted")
    folder, cfg = found
    if cfg.get("family") != "adm-classifier":
        raise ValueError(f"{folder} holds a {cfg.get('family')} model, not an ADM classifier")
    clf = NoisyClassifier(_adm_net(folder, cfg, dtype), cfg.get("schedule"))
    return clf if device is None else clf.to(device)
