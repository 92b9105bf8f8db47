"""The BatchTransform contract: inputs converted to a float batch and restored to their type, every draw of a call
in draw_params (per-sample p included), a kernel that is deterministic given the drawn parameters."""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import types

import numpy as np
import PIL.Image
import pytest
import torch
import torch.utils.data
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from robaug._core.rng import Rng, worker_generator, worker_seed
from robaug.transforms import IPMix
from robaug.transforms._base import BatchTransform, check_int, check_real


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
    with pytest.raises(ValueError, match=r"Darken: p must lie in \[0.0, 1.0\]"):
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


# --------------------------------------------------------------------------------------------------
# inputs that are not images are refused, never passed through unaugmented


@pytest.mark.parametrize(
    "call, expect",
    [
        (lambda t: t(np.zeros((28, 28, 3), np.uint8)), r"numpy\.ndarray of shape \(28, 28, 3\).*permute\(2, 0, 1\)"),
        (lambda t: t((np.zeros((1, 28, 28), np.float32), 3)), r"tuple \(numpy\.ndarray.*v2\.ToImage\(\)"),
        (lambda t: t(np.zeros((28, 28, 1), np.uint8), torch.tensor(3)), r"numpy\.ndarray"),  # not the label as image
        (lambda t: t([0.1, 0.2, 0.3]), r"list of 3 floats.*torch\.tensor\(values\)"),
        (lambda t: t(7), r"got int, which holds no image"),
    ],
    ids=["numpy", "numpy-label", "numpy-tensor-label", "list", "int"],
)
def test_numpy_arrays_and_lists_raise_a_type_error_saying_how_to_convert(call, expect):
    t = Darken(generator=_gen(0))
    with pytest.raises(TypeError, match=expect) as info:
        call(t)
    assert str(info.value).startswith("Darken input: ")


def test_a_numpy_label_next_to_an_image_passes_through():
    x = tv_tensors.Image(torch.rand(3, 8, 8))
    onehot = np.eye(10, dtype=np.float32)[:2]  # an array that is not where the image is
    out, lab = Darken(generator=_gen(0))(x, onehot)
    assert lab is onehot and not torch.equal(out, x)


def test_corrupt_refuses_numpy_through_the_same_conversion():
    from robaug.eval import corrupt

    with pytest.raises(TypeError, match=r"images: got numpy\.ndarray.*torch\.from_numpy"):
        corrupt(np.zeros((1, 28, 28), np.uint8), "fog", 1)


def test_real_and_int_settings_are_checked_naming_the_argument():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"Darken: p must be a finite number"):
            Darken(p=bad)
    with pytest.raises(TypeError, match="Darken: p must be a real number"):
        Darken(p="0.5")
    assert check_real(np.float32(0.5), "x", "T", 0, 1) == 0.5
    with pytest.raises(ValueError, match=r"T: x must lie in \(0, 1\]"):
        check_real(0, "x", "T", 0, 1, low_open=True)
    assert check_int(3.0, "n", "T", low=1) == 3 and check_int(np.int64(2), "n", "T") == 2
    with pytest.raises(ValueError, match="T: n must be a whole number, got 2.5"):
        check_int(2.5, "n", "T")
    with pytest.raises(ValueError, match="T: n must be a whole number, got inf"):
        check_int(math.inf, "n", "T")
    with pytest.raises(ValueError, match="T: n must be >= 1, got 0"):
        check_int(0, "n", "T", low=1)
    with pytest.raises(TypeError, match="T: n must be an integer"):
        check_int(True, "n", "T")


# --------------------------------------------------------------------------------------------------
# a seeded generator in DataLoader workers: one stream per worker


class _Augmented(torch.utils.data.Dataset):
    """``n`` copies of one image, each through ``transform``: outputs differ only by the transform's draws."""

    def __init__(self, transform, n=8):
        self.transform, self.n = transform, n
        self.image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=_gen(0))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(self.image), i


def _epoch(loader):
    return {int(i): x[0] for x, i in loader}


_FORK = "fork" if "fork" in mp.get_all_start_methods() else None


def _ipmix():
    return IPMix(mixing_set=torch.rand(4, 3, 8, 8, generator=_gen(9)), generator=_gen(1))


def _diffaug():
    from robaug.diffusion import CallableDenoiser
    from robaug.transforms import DiffAug

    # D(x_noisy) = x_noisy: the output is the clipped noisy image, so it shows every draw
    return DiffAug(CallableDenoiser(lambda x, s, y=None: x, in_channels=3), generator=_gen(1))


@pytest.mark.skipif(_FORK is None, reason="the test's lambdas need the fork start method")
@pytest.mark.parametrize("make", [_ipmix, _diffaug, lambda: Darken(generator=_gen(1))],
                         ids=["ipmix", "diffaug", "base"])  # fmt: skip
def test_dataloader_workers_draw_different_streams(make):
    ds = _Augmented(make())
    kw = dict(batch_size=1, num_workers=2, multiprocessing_context=_FORK)
    first = _epoch(torch.utils.data.DataLoader(ds, generator=_gen(7), **kw))
    outs = list(first.values())
    assert len(outs) == 8
    distinct = {tuple(o.flatten().tolist()) for o in outs}
    assert len(distinct) == 8  # with one copied generator per worker: 4 (the workers repeat each other)
    # reproducible when the DataLoader is seeded (as its shuffling is) ...
    again = _epoch(torch.utils.data.DataLoader(ds, generator=_gen(7), **kw))
    assert all(torch.equal(first[i], again[i]) for i in range(8))
    # ... and a new epoch (a new base seed) gives new augmentations, also with non-persistent workers
    other = _epoch(torch.utils.data.DataLoader(ds, generator=_gen(8), **kw))
    assert not any(torch.equal(first[i], other[i]) for i in range(8))


class _PerSampleSeeded(_Augmented):
    """Seeds the transform's generator from the index before each call: per-sample reproducibility."""

    def __getitem__(self, i):
        self.transform.generator.manual_seed(1000 + i)
        return self.transform(self.image), i


@pytest.mark.skipif(_FORK is None, reason="the test's lambdas need the fork start method")
def test_a_generator_the_worker_seeds_itself_is_used_as_is():
    ds = _PerSampleSeeded(IPMix(mixing_set=torch.rand(4, 3, 8, 8, generator=_gen(9)), generator=_gen(1)))
    in_main = _epoch(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=0))
    in_workers = _epoch(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context=_FORK))
    assert all(torch.equal(in_main[i], in_workers[i]) for i in range(8))  # independent of the number of workers
    assert len({tuple(o.flatten().tolist()) for o in in_main.values()}) == 8


def test_unpickled_copies_in_spawned_workers_get_streams_of_their_own(monkeypatch):
    """Spawned / forkserver workers receive the transform pickled (simulated here: spawning is slow)."""
    t = Darken(generator=_gen(5))
    x = torch.rand(1, 3, 4, 4, generator=_gen(0))
    blob = pickle.dumps(t)
    worker = types.SimpleNamespace(seed=1234)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker)
    a, b = pickle.loads(blob), pickle.loads(blob)
    out_a = a(x)
    worker.seed = 1235  # the other worker
    out_b = b(x)
    assert not torch.equal(out_a, out_b)
    assert a.generator.initial_seed() == worker_seed(5, 1234) and b.generator.initial_seed() == worker_seed(5, 1235)
    ref = Darken(generator=torch.Generator().manual_seed(worker_seed(5, 1234)))
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    assert torch.equal(out_a, ref(x))
    # a copy the worker's code seeds before its first use keeps that seed
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker)
    c = pickle.loads(blob)
    c.generator.manual_seed(77)
    out_c = c(x)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    assert torch.equal(out_c, Darken(generator=_gen(77))(x))


def test_the_main_process_draws_from_the_generator_itself():
    g = _gen(3)
    assert worker_generator(g) is g and worker_generator(None) is None
    t = Darken(generator=_gen(3))
    ds = _Augmented(t)
    in_main = _epoch(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=0))
    ref = Darken(generator=_gen(3))
    assert all(torch.equal(in_main[i], ref(ds.image)) for i in range(8))


def test_worker_seed_mixes_both_seeds():
    seeds = {worker_seed(s, w) for s in (0, 1, 2**64 - 1) for w in (0, 1, 2, 2**63)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert worker_seed(5, 1) == worker_seed(5, 1)
