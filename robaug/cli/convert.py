"""``robaug convert SRC DST``: the papers' checkpoints (guided-diffusion ADM ``.pt``, NVIDIA EDM ``.pkl``) as
``DST/model.safetensors`` + ``DST/config.json``, without running code from the file
(:func:`robaug.hub.convert.convert`)."""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from ._common import make_parser, run_main

DESCRIPTION = ("Convert a checkpoint of the papers' diffusion models (guided-diffusion ADM .pt, NVIDIA EDM "
                    ".pkl) into DST/model.safetensors + DST/config.json without running code from the file. "
                    "Load the result with robaug.load_denoiser(DST), robaug.DiffAug(DST) or "
                    "`robaug generate --model DST`.")
EPILOG = """examples:
  robaug convert 256x256_diffusion_uncond.pt models/adm-256-uncond --arch 256x256_diffusion_uncond
  robaug convert edm-cifar10-32x32-cond-vp.pkl models/edm-cifar10-cond-vp
  robaug convert my_finetuned.pt models/mine --config '{"num_channels": 128, "attention_resolutions": "16,8"}'"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from robaug.hub._adm_config import ADM_PRESETS

    p.add_argument("src", help="the checkpoint (.pt / .pth state dict, .safetensors, or EDM .pkl)")
    p.add_argument("dst", help="output folder")
    p.add_argument("--arch", default=None, choices=sorted(ADM_PRESETS), metavar="NAME",
                   help=f"architecture preset named after the official file: {', '.join(ADM_PRESETS)}")
    p.add_argument("--config", default=None, metavar="JSON",
                   help="UNetModel / EncoderUNetModel keyword arguments as JSON (guided-diffusion's names, e.g. "
                        '\'{"num_head_channels": 64, "use_new_attention_order": false, "image_size": 256, '
                        '"noise_schedule": "linear"}\'); overrides --arch')


def run(args: argparse.Namespace) -> int:
    from robaug.hub.convert import convert

    try:
        config = json.loads(args.config) if args.config else None
    except ValueError as err:
        raise ValueError(f"--config is not valid JSON: {err}") from None
    if config is not None and not isinstance(config, dict):
        raise ValueError("--config must be a JSON object of keyword arguments")
    out = convert(args.src, args.dst, arch=args.arch, config=config)
    print(f"wrote {out / 'model.safetensors'} and {out / 'config.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("convert", DESCRIPTION, EPILOG)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``robaug convert ARGV``: a user error (unsafe file, unknown architecture) prints one line and returns 2."""
    return run_main("convert", build_parser(), run, argv)
