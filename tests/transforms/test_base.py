"""The BatchTransform contract: inputs converted to a float batch and restored to their type, every draw of a call
in draw_params (per-sample p included), a kernel that is deterministic given the drawn parameters."""

from __future__ import annotations

import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from robaug._core.rng import Rng
from robaug.transforms import IPMix
from robaug.transforms._base import BatchTransform


class Darken(BatchTransform):
    """Multiplies each selected image by its own factor ``s ~ U(0.2, 0.8)``."""

    def __init__(self, p=None, generator=None):
        super().__init__(generator=generator, p=p)

    def draw_params(self, batch, rng):
        return {"scale": 0.2 + 0.6 * rng.rand(batch.shape[0]), "apply": self.draw_apply(batch.shape[0], rng)}

    def kernel(self, batch, params):
        scale = params["scale"].view(-1, 1, 1, 1)
        if params["apply"] is not None:
            scale = torch.where(params["apply"].view(-1, 1, 1, 1), scale, torch.ones_like(scale))
        return batch * scale


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_inputs_come_back_in_their_own_type_dtype_and_shape():
    x8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=_gen(0))
    t = Darken(generator=_gen(1))
    cases = [x8, x8[0], x8.view(2, 2, 3, 8, 8), x8.double() / 255, tv_tensors.Image(x8)]
    for inpt in cases:
        out = t(inpt)
        assert type(out) is type(inpt) and out.dtype == inpt.dtype and out.shape == inpt.shape
        assert (out.float() <= inpt.float() + 1e-6).all() and not torch.equal(out, inpt)  # darker
    for mode in ("L", "RGB"):
        pil = TF.to_pil_image(x8[0, :1] if mode == "L" else x8[0])
        out = t(pil)
        assert isinstance(out, PIL.Image.Image) and out.mode == mode and out.size == pil.size


def test_labels_boxes_and_masks_pass_through():
    x = torch.rand(2, 3, 8, 8)
    labels = torch.tensor([3, 1])
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0, 0, 4, 4]]), format="XYXY", canvas_size=(8, 8))
    img, lab, bx = Darken()(tv_tensors.Image(x), labels, boxes)
    assert lab is labels and bx is boxes and not torch.equal(img, x)


def test_every_draw_of_a_call_is_in_draw_params_and_the_kernel_is_deterministic():
    x = torch.rand(16, 3, 8, 8, generator=_gen(0))
    t = Darken(p=0.5, generator=_gen(2))
    params = t.draw_params(x, Rng(x.device, t.generator))
    state = t.generator.get_state()
    out = t.kernel(x, params)
    assert torch.equal(t.generator.get_state(), state)  # the kernel draws nothing
    assert torch.equal(out, t.kernel(x, params))
    t.generator.manual_seed(2)
    assert torch.equal(out, t(x))  # the transform is draw_params -> kernel with the transform's generator
    # per-sample p: exactly the images the mask selects change
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, params["apply"])


def test_per_sample_p():
    x = torch.rand(4000, 1, 2, 2, generator=_gen(0)) * 0.5 + 0.5
    out = Darken(p=0.3, generator=_gen(3))(x)
    share = (out != x).flatten(1).any(1).float().mean()
    assert abs(share - 0.3) < 0.03
    assert torch.equal(Darken(p=0.0, generator=_gen(3))(x), x)
    # p = 1 (or unset) draws no coins: the same numbers as a transform without p
    g1, g2 = _gen(4), _gen(4)
    assert torch.equal(Darken(p=1.0, generator=g1)(x), Darken(generator=g2)(x))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_bad_p_and_generator_raise_naming_the_argument():
    with pytest.raises(ValueError, match="Darken: p must lie in"):
        Darken(p=1.5)
    with pytest.raises(TypeError, match="Darken: generator"):
        Darken(generator=3)


def test_ipmix_is_its_plan_applied():
    """IPMix's call is draw_params (the plan, every random choice) then the kernel, which draws nothing."""
    x = torch.rand(6, 3, 16, 16, generator=_gen(0))
    mixing = torch.rand(3, 3, 16, 16, generator=_gen(1))
    t = IPMix(mixing_set=mixing, generator=_gen(5))
    ref = t.augment(x)
    t.generator.manual_seed(5)
    plan = t.draw_params(x, t.rng(x.device))
    state = t.generator.get_state()
    out = t.kernel(x, plan)
    assert torch.equal(t.generator.get_state(), state)
    assert torch.equal(out, ref) and torch.equal(t.kernel(x, plan), ref)
