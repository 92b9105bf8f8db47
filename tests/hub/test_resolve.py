"""One model argument everywhere: a registry name, a local path or a Denoiser, resolved by one function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robaug
from robaug.hub import load_denoiser
from robaug.hub.resolve import resolve_denoiser

SHIPPED = Path(robaug.__file__).parent / "weights" / "fmnist-ddpm.safetensors"


@pytest.mark.parametrize("make", [
    lambda m: robaug.DiffAug(m),
    lambda m: robaug.DiffAugEnsemble(torch.nn.Flatten(), m, timesteps=[0, 100]),
    lambda m: robaug.GuidedDiffusion(m, num_steps=2),
    lambda m: robaug.ContrastiveGuidedSampler(m, torch.nn.Flatten(), num_steps=2),
], ids=["DiffAug", "DiffAugEnsemble", "GuidedDiffusion", "ContrastiveGuidedSampler"])
def test_every_model_taker_accepts_name_path_and_object(make):
    ref = make(load_denoiser("fmnist-ddpm")).denoiser.state_dict()
    for model in ("fmnist-ddpm", SHIPPED, str(SHIPPED)):
        got = make(model).denoiser.state_dict()
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), model


def test_object_is_returned_as_is():
    d = load_denoiser("fmnist-ddpm")
    assert resolve_denoiser(d) is d


@pytest.mark.parametrize("bad,hint", [(42, "int"), (torch.nn.Linear(2, 2), "CallableDenoiser")])
def test_wrong_type_names_owner_and_fix(bad, hint):
    with pytest.raises(TypeError, match=rf"GuidedDiffusion: .*{hint}"):
        robaug.GuidedDiffusion(bad)


def test_unknown_name_is_named():
    with pytest.raises((KeyError, ValueError, FileNotFoundError), match="no-such-model"):
        resolve_denoiser("no-such-model")
