"""Fixtures of the recipe tests: a tiny random denoiser and a tiny generated set in robaug's shard format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_denoiser_path(tmp_path_factory) -> Path:
    """A randomly initialised diffusers UNet (the built-in model's layout, much smaller) as .safetensors + .json."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
               down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
               norm_num_groups=4)
    d = tmp_path_factory.mktemp("denoiser")
    save_file({k: v.contiguous() for k, v in UNet2DModel(**cfg).state_dict().items()}, str(d / "tiny.safetensors"))
    sched = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 prediction_type="epsilon")
    (d / "tiny.json").write_text(json.dumps({"unet": cfg, "scheduler": sched}))
    return d / "tiny.safetensors"
