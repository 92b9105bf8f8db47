"""ADM architecture configs: presets for the published guided-diffusion files, and inference from a state dict.

Keyword names are those of guided-diffusion's ``UNetModel(...)`` / ``EncoderUNetModel(...)`` (what its
``script_util.create_model`` / ``create_classifier`` pass, e.g. ``attention_resolutions`` as *downsampling
rates* ``image_size // r``). The shapes of a state dict tell ``model_channels``, ``in_channels``,
``out_channels`` (so ``learn_sigma``), ``channel_mult``, ``num_res_blocks``, ``num_classes``, the levels with
attention, ``use_scale_shift_norm``, ``resblock_updown`` / ``conv_resample`` and the classifier's ``pool`` (and
its ``image_size``). They cannot tell the attention head layout (``num_heads`` / ``num_head_channels`` /
``use_new_attention_order``: no parameters depend on it), ``dropout`` or a UNet's ``image_size``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

__all__ = ["ADM_PRESETS", "ADM_SCHEDULES", "infer_adm_config", "HEAD_KEYS"]

#: guided-diffusion's noise schedules (float64 tables, as its ``get_named_beta_schedule``)
ADM_SCHEDULES: dict[str, dict[str, Any]] = {
    "linear": {"beta_schedule": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
               "prediction_type": "epsilon", "betas_dtype": "float64"},
    "cosine": {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000, "prediction_type": "epsilon",
               "betas_dtype": "float64"},
}

HEAD_KEYS = ("num_heads", "num_head_channels")

_MULT = {64: (1, 2, 3, 4), 128: (1, 1, 2, 3, 4), 256: (1, 1, 2, 2, 4, 4), 512: (0.5, 1, 1, 2, 2, 4, 4)}


def _ds(size: int, res: tuple[int, ...] = (32, 16, 8)) -> list[int]:
    return [size // r for r in res]


def _unet(size: int, *, classes: bool, channels: int = 256, blocks: int = 2, heads: int = 4, head_ch: int = 64,
          new_order: bool = False, dropout: float = 0.0, fp16: bool = True, res=(32, 16, 8)) -> dict[str, Any]:
    return {"image_size": size, "in_channels": 3, "model_channels": channels, "out_channels": 6,
            "num_res_blocks": blocks, "attention_resolutions": _ds(size, res), "dropout": dropout,
            "channel_mult": list(_MULT[size]), "num_classes": 1000 if classes else None, "use_fp16": fp16,
            "num_heads": heads, "num_head_channels": head_ch, "num_heads_upsample": -1,
            "use_scale_shift_norm": True, "resblock_updown": True, "use_new_attention_order": new_order}


def _classifier(size: int, depth: int = 2) -> dict[str, Any]:
    return {"image_size": size, "in_channels": 3, "model_channels": 128, "out_channels": 1000,
            "num_res_blocks": depth, "attention_resolutions": _ds(size), "channel_mult": list(_MULT[size]),
            "use_fp16": False, "num_head_channels": 64, "use_scale_shift_norm": True, "resblock_updown": True,
            "pool": "attention"}


#: ``--arch`` presets, named after the official files (flags from guided-diffusion's README):
#: ``{name: (family, kwargs, schedule name)}``
ADM_PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "256x256_diffusion_uncond": ("adm", _unet(256, classes=False), "linear"),
    "256x256_diffusion": ("adm", _unet(256, classes=True), "linear"),
    "128x128_diffusion": ("adm", _unet(128, classes=True, head_ch=-1), "linear"),
    "512x512_diffusion": ("adm", _unet(512, classes=True, fp16=False), "linear"),
    "64x64_diffusion": ("adm", _unet(64, classes=True, channels=192, blocks=3, new_order=True, dropout=0.1),
                        "cosine"),
    "lsun_bedroom": ("adm", _unet(256, classes=False, dropout=0.1), "linear"),
    "64x64_classifier": ("adm-classifier", _classifier(64, depth=4), "cosine"),
    "128x128_classifier": ("adm-classifier", _classifier(128), "linear"),
    "256x256_classifier": ("adm-classifier", _classifier(256), "linear"),
    "512x512_classifier": ("adm-classifier", _classifier(512), "linear"),
}


def _indices(keys, prefix: str) -> set[int]:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return {int(m.group(1)) for k in keys if (m := pat.match(k))}


def _mult(c: int, mc: int) -> float | int:
    m = c / mc
    return int(m) if m == int(m) else m


def _candidates(sd: Mapping[str, Any], mc: int, unet: bool) -> list[dict[str, Any]]:
    """Every (levels, num_res_blocks, resampling) layout whose blocks are consistent with the keys and shapes."""
    n_in = max(_indices(sd, "input_blocks")) + 1
    out: list[dict[str, Any]] = []

    def res(i: int) -> tuple[int, int, bool, bool] | None:  # (in, out, has skip conv, has attention)
        w = sd.get(f"input_blocks.{i}.0.in_layers.2.weight")
        if w is None:
            return None
        return (int(w.shape[1]), int(w.shape[0]), f"input_blocks.{i}.0.skip_connection.weight" in sd,
                f"input_blocks.{i}.1.qkv.weight" in sd)

    for n in range(1, n_in):
        if n_in % (n + 1):
            continue
        levels = n_in // (n + 1)
        downs = {(lv + 1) * (n + 1) for lv in range(levels - 1)}
        kinds = set()
        for i in downs:
            r = res(i)
            if f"input_blocks.{i}.0.op.weight" in sd:
                kinds.add("conv")
            elif not any(k.startswith(f"input_blocks.{i}.") for k in sd):
                kinds.add("pool")
            elif r is not None and r[0] == r[1] and not r[2] and not r[3]:
                kinds.add("res")
            else:
                kinds.add("bad")
        if "bad" in kinds or len(kinds) > 1:
            continue
        mult, attn, ok = [], [], True
        for lv in range(levels):
            blocks = [res(1 + lv * (n + 1) + k) for k in range(n)]
            if any(b is None for b in blocks) or len({b[1] for b in blocks}) != 1 or len({b[3] for b in blocks}) != 1:
                ok = False
                break
            mult.append(_mult(blocks[0][1], mc))
            if blocks[0][3]:
                attn.append(2**lv)
        if not ok:
            continue
        if unet:
            if max(_indices(sd, "output_blocks")) + 1 != n_in:
                continue
            ups = [(n + 1) * m + n for m in range(levels - 1)]
            marks = [any(f"output_blocks.{j}.{k}.{leaf}" in sd
                         for k in (1, 2) for leaf in ("conv.weight", "in_layers.2.weight"))
                     for j in ups]
            # parameter-free upsampling pairs with parameter-free downsampling; else every level change has one
            if any(marks) if kinds == {"pool"} else not all(marks):
                continue
        kind = next(iter(kinds), None)
        out.append({"num_res_blocks": n, "channel_mult": mult, "attention_resolutions": attn,
                    "resblock_updown": kind == "res", "conv_resample": kind != "pool", "_levels": levels})
    return out


def infer_adm_config(sd: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """``(family, inferred kwargs, alternatives)`` from an ADM state dict. ``alternatives`` holds the layouts
    (``num_res_blocks``, ``channel_mult``, ...) still possible when the shapes do not pin one down."""
    if "time_embed.0.weight" not in sd or "input_blocks.0.0.weight" not in sd:
        raise ValueError("this state dict is not a guided-diffusion / improved-diffusion ADM network (no "
                         "time_embed.0.weight / input_blocks.0.0.weight)")
    unet = any(k.startswith("output_blocks.") for k in sd)
    family = "adm" if unet else "adm-classifier"
    mc = int(sd["time_embed.0.weight"].shape[1])
    first = sd["input_blocks.0.0.weight"]
    kw: dict[str, Any] = {"in_channels": int(first.shape[1]), "model_channels": mc}
    emb = sd.get("input_blocks.1.0.emb_layers.1.weight")
    out1 = sd.get("input_blocks.1.0.in_layers.2.weight")
    if emb is not None and out1 is not None:
        kw["use_scale_shift_norm"] = int(emb.shape[0]) == 2 * int(out1.shape[0])
    if unet:
        kw["out_channels"] = int(sd["out.2.weight"].shape[0])
        kw["num_classes"] = int(sd["label_emb.weight"].shape[0]) if "label_emb.weight" in sd else None
    elif "out.2.positional_embedding" in sd:
        kw["pool"] = "attention"
        kw["out_channels"] = int(sd["out.2.c_proj.weight"].shape[0])
    elif "out.3.weight" in sd and sd["out.3.weight"].ndim == 4:
        kw["pool"] = "adaptive"
        kw["out_channels"] = int(sd["out.3.weight"].shape[0])
    elif "out.1.weight" in sd and "out.3.weight" in sd:
        kw["pool"] = "spatial_v2"
        kw["out_channels"] = int(sd["out.3.weight"].shape[0])
    elif "out.2.weight" in sd:
        kw["pool"] = "spatial"
        kw["out_channels"] = int(sd["out.2.weight"].shape[0])
    cands = [c for c in _candidates(sd, mc, unet) if _mult(int(first.shape[0]), mc) == c["channel_mult"][0]]
    if len(cands) == 1:
        c = dict(cands[0])
        levels = c.pop("_levels")
        kw.update(c)
        if kw.get("pool") == "attention":
            side = math.isqrt(int(sd["out.2.positional_embedding"].shape[1]) - 1)
            kw["image_size"] = side * 2 ** (levels - 1)
        cands = []
    for c in cands:
        c.pop("_levels", None)
    return family, kw, cands
