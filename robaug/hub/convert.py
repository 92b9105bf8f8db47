"""``robaug convert SRC DST``: the papers' checkpoints (ADM ``.pt``, EDM ``.pkl``) to a safetensors folder.

``DST/model.safetensors`` + ``DST/config.json``::

    {"format": "robaug-converted", "family": "adm" | "adm-classifier", "kwargs": {...}, "schedule": {...},
     "source": {"file": ..., "sha256": ...}}

(EDM pickles: ``"family": "edm"``, written by :mod:`robaug.hub.convert_edm`). ``load_denoiser(DST)``,
``robaug.DiffAug(DST)`` and ``robaug generate --model DST`` load the folder; ``load_classifier(DST)`` loads a
converted noisy classifier.

Safety: ``.pt`` / ``.pth`` files are read only with ``torch.load(weights_only=True)`` (tensors and plain
containers; anything that needs more is refused with the reason); ``.pkl`` goes through EDM's restricted
unpickler, which never imports or runs code stored in the file.

The architecture (``kwargs``, guided-diffusion's ``UNetModel`` / ``EncoderUNetModel`` keyword names) is
inferred from the state dict's shapes where it can be (:mod:`robaug.hub._adm_config`); ``--arch`` names a
preset for an official file (``256x256_diffusion_uncond``, ``64x64_diffusion``, ``64x64_classifier``, ...);
``--config JSON`` gives keyword arguments (plus ``noise_schedule``: ``"linear"`` / ``"cosine"``) and wins over
both. Inferred values that contradict ``--arch`` / ``--config`` are an error; so is a state dict that does not
load strictly into the resulting network.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from .._core.io import atomic_path, atomic_write_json
from ._adm_config import ADM_PRESETS, ADM_SCHEDULES, HEAD_KEYS, infer_adm_config
from ._converted import CONVERTED_FORMAT
from ._download import UnsafeWeightsError, sha256_file

__all__ = ["convert", "CONVERTED_FORMAT", "ADM_PRESETS"]

_WRAPPER_KEYS = ("state_dict", "model", "ema_model", "ema")
_SCHEDULE_KEYS = ("noise_schedule", "diffusion_steps")


def _read_torch_state_dict(src: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeWeightsError(
            f"refusing {src}: torch.load(weights_only=True) could not read it, because it holds more than tensors "
            f"and plain containers ({err}). Unpickling that would run code named in the file; robaug never does. "
            "If you trust the file, load it yourself and save its state_dict() with torch.save or safetensors."
        ) from None
    except Exception as err:  # truncated / not a torch file
        raise ValueError(f"{src} is not a readable torch checkpoint: {err}") from None
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:  # {"state_dict": {...}}-style training checkpoints
            if isinstance(obj.get(key), Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{src} does not hold a state dict (a mapping of names to tensors)")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    suffix = src.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _read_torch_state_dict(src)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(src), device="cpu")
    raise UnsafeWeightsError(
        f"robaug convert reads .pt / .pth state dicts (with torch.load(weights_only=True)), .safetensors and EDM "
        f".pkl pickles (with a restricted unpickler); {src.name} is neither, so it is refused rather than guessed at"
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return sorted(a or ()) == sorted(b or ())
    return a == b


def adm_config(sd: Mapping[str, torch.Tensor], arch: str | None = None,
               config: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(family, kwargs, schedule)`` for an ADM state dict: inferred shapes, ``arch`` preset, ``config``."""
    family, inferred, alternatives = infer_adm_config(sd)
    kwargs: dict[str, Any] = {}
    schedule_name = "linear"
    if arch is not None:
        if arch not in ADM_PRESETS:
            raise ValueError(f"unknown --arch {arch!r}; presets: {', '.join(ADM_PRESETS)}")
        preset_family, preset, schedule_name = ADM_PRESETS[arch]
        if preset_family != family:
            raise ValueError(f"--arch {arch} is a {preset_family} preset but the weights are an {family} network")
        kwargs.update(preset)
    config = dict(config or {})
    schedule_name = config.pop("noise_schedule", schedule_name)
    steps = int(config.pop("diffusion_steps", 1000))
    if schedule_name not in ADM_SCHEDULES:
        raise ValueError(f"noise_schedule must be one of {sorted(ADM_SCHEDULES)}, got {schedule_name!r}")
    kwargs.update(config)
    given = set(config) | (set(ADM_PRESETS[arch][1]) if arch else set())
    for key, value in inferred.items():
        if (key in given and not _same(kwargs[key], value)
                and not (key == "conv_resample" and inferred["resblock_updown"])):
            raise ValueError(f"the weights say {key}={value!r} but --arch/--config says {kwargs[key]!r}")
        kwargs.setdefault(key, value)
    if alternatives and not {"num_res_blocks", "channel_mult"} <= given:
        raise ValueError(
            f"the shapes fit {len(alternatives)} layouts ({alternatives}); pass --arch or --config with "
            "num_res_blocks, channel_mult and attention_resolutions")
    if not any(k in kwargs for k in HEAD_KEYS):
        raise ValueError(
            "the attention head layout cannot be read from the weights: pass --arch NAME (one of "
            f"{', '.join(ADM_PRESETS)}) or --config with num_head_channels (or num_heads) and "
            "use_new_attention_order, as in the flags the model was trained with")
    if "image_size" not in kwargs:
        raise ValueError("the image size of a UNet cannot be read from its weights: pass --arch or --config "
                         '\'{"image_size": 256, ...}\'')
    kwargs.setdefault("attention_resolutions", [])
    schedule = dict(ADM_SCHEDULES[schedule_name], num_train_timesteps=steps)
    if schedule_name == "linear":  # guided-diffusion scales linear betas with 1000 / T
        schedule.update(beta_start=1e-4 * 1000 / steps, beta_end=0.02 * 1000 / steps)
    return family, kwargs, schedule


def build_adm(family: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """The robaug ADM network of a converted config (random weights)."""
    from robaug.diffusion.nets.adm import EncoderUNetModel, UNetModel

    cls = UNetModel if family == "adm" else EncoderUNetModel
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad {cls.__name__} keyword arguments {dict(kwargs)}: {err}") from None


def check_state_dict(net: torch.nn.Module, sd: Mapping[str, torch.Tensor], origin: str) -> None:
    """Strict key and shape check with a readable error."""
    want = net.state_dict()
    missing = sorted(want.keys() - sd.keys())
    unexpected = sorted(sd.keys() - want.keys())
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want.keys() & sd.keys()
              if tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(
            f"the weights in {origin} do not fit the architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {shapes[:5]} (check --arch / --config)")


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, arch: str | None = None,
            config: Mapping[str, Any] | None = None) -> Path:
    """Convert ``src`` (ADM ``.pt``/``.pth``/``.safetensors`` state dict, or an EDM ``.pkl``) into the folder
    ``dst`` (``model.safetensors`` + ``config.json``, written atomically with the user's umask); returns ``dst``."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a folder")
    if src.suffix.lower() in (".pkl", ".pickle"):
        if arch is not None or config:
            raise ValueError("EDM pickles carry their own architecture (init_kwargs); --arch/--config do not apply")
        from .convert_edm import convert_edm_pickle

        return Path(convert_edm_pickle(src, dst))
    sd = _read_state_dict(src)
    family, kwargs, schedule = adm_config(sd, arch, config)
    with torch.device("meta"):
        net = build_adm(family, kwargs)
    check_state_dict(net, sd, str(src))
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"format": "pt"})
    atomic_write_json(dst / "config.json", {
        "format": CONVERTED_FORMAT, "family": family, "kwargs": kwargs, "schedule": schedule,
        "source": {"file": src.name, "sha256": sha256_file(src)},
    })
    return dst
