"""The DDPM training schedule the hub assumes (registry entries, model folders without a scheduler config) is the
one robaug.diffusion.schedule gives continuous-time denoisers, and what diffusers' DDPMScheduler builds from it."""

import json

import pytest
import torch

from robaug.diffusion.schedule import default_timestep_sigmas, sigmas_from_scheduler_config
from robaug.hub import _build, get_entry, registry


def test_hub_ddpm_config_is_the_default_timestep_schedule():
    assert torch.equal(sigmas_from_scheduler_config(registry._DDPM_SCHEDULER), default_timestep_sigmas())
    assert dict(get_entry("google/ddpm-cifar10-32").scheduler_config) == registry._DDPM_SCHEDULER


def test_hub_ddpm_config_matches_diffusers():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(registry._DDPM_SCHEDULER)
    abar = sched.alphas_cumprod.to(torch.float64)
    assert torch.equal(((1 - abar) / abar).sqrt(), default_timestep_sigmas())
    assert sched.config.prediction_type == "epsilon"


def test_model_folder_without_scheduler_config_gets_the_ddpm_schedule(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.warns(UserWarning, match="no scheduler_config.json"):
        spec = _build.resolve_local(tmp_path)
    assert spec.scheduler_config == registry._DDPM_SCHEDULER
    assert spec.scheduler_config is not registry._DDPM_SCHEDULER  # a copy: callers may edit it


def test_unknown_registry_name_suggests_the_close_one():
    with pytest.raises(KeyError, match=r"unknown pretrained weights 'google/ddpm-cifar10'; did you mean "
                                        r"'google/ddpm-cifar10-32'\? Known: fmnist-ddpm, "):
        get_entry("google/ddpm-cifar10")
    assert registry.list_pretrained() == sorted(registry.list_pretrained())
    assert "fmnist-ddpm" in registry.list_pretrained()
