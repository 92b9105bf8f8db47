"""Behaviour is bit-exact across refactors: the public entry points give the outputs recorded in
tests/fixtures/golden.safetensors (see tests/golden_outputs.py) for fixed seeds."""

from __future__ import annotations

import pytest
import torch
from golden_outputs import GOLDEN, GROUPS, compute

safetensors = pytest.importorskip("safetensors")


def _recorded() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


@pytest.mark.parametrize("group", list(GROUPS))
def test_outputs_match_recording(group):
    recorded, meta = _recorded()
    if meta.get("torch") != torch.__version__:
        pytest.skip(f"recorded with torch {meta.get('torch')}, running {torch.__version__}")
    now = compute((group,))
    assert now, group
    for k, v in now.items():
        assert k in recorded, f"{k} was not recorded"
        ref = recorded[k]
        assert v.shape == ref.shape and v.dtype == ref.dtype, k
        if v.is_floating_point():
            # same ops in the same order on the same machine: equal up to float reassociation in BLAS kernels
            torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(v, ref), k
    missing = {k for k in recorded if k.startswith(_PREFIX[group])} - set(now)
    assert not missing, f"no longer produced: {sorted(missing)[:5]}"


_PREFIX = {"transforms": ("ipmix", "diffaug"), "corruptions": ("corrupt_",), "samplers": ("sample_",),
           "training": ("train_",)}
