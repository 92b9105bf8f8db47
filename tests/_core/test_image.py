import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors

from robaug._core.image import to_float_batch


def test_uint8_round_trip_is_exact_and_rounds_not_truncates():
    x = torch.randint(0, 256, (2, 3, 3, 5, 5), dtype=torch.uint8)
    b, restore = to_float_batch(x)
    assert b.shape == (6, 3, 5, 5) and b.dtype == torch.float32
    assert torch.equal(restore(b), x)
    # 0.4999/255 above a level must round down, 0.5001/255 must round up (truncation would give 10 for both)
    y = torch.full_like(b, (10 + 0.6) / 255)
    assert (restore(y) == 11).all()


def test_pil_modes_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for img in (PIL.Image.fromarray(arr), PIL.Image.fromarray(arr[..., 0])):
        b, restore = to_float_batch(img)
        assert b.shape == (1, 3 if img.mode == "RGB" else 1, 6, 7)
        out = restore(b)
        assert isinstance(out, PIL.Image.Image) and out.mode == img.mode
        assert np.array_equal(np.asarray(out), np.asarray(img))


def test_tv_tensor_and_float_dtype_are_kept():
    x = tv_tensors.Image(torch.rand(3, 8, 8, dtype=torch.float64))
    b, restore = to_float_batch(x)
    out = restore(b)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float64 and out.shape == (3, 8, 8)
    assert torch.allclose(out, x)


@pytest.mark.parametrize(
    "bad, err, match",
    [
        (torch.rand(0, 3, 8, 8), ValueError, "empty"),
        (torch.rand(2, 4, 8, 8), ValueError, "1 or 3 channels"),
        (torch.rand(8, 8), ValueError, "shape"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.rand(1, 3, 4, 4) * 2 - 1, ValueError, r"\[0, 1\]"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int32), TypeError, "dtype"),
        ([1, 2, 3], TypeError, "PIL image"),
        (PIL.Image.new("CMYK", (4, 4)), TypeError, "convert"),
    ],
)
def test_bad_input_has_clear_errors(bad, err, match):
    with pytest.raises(err, match=match):
        to_float_batch(bad)


@pytest.mark.parametrize("shape", [(7,), (5, 1, 4, 4), (9, 3, 700, 700)])
def test_float_to_uint8_matches_the_formula_in_one_piece_or_in_chunks(shape, monkeypatch):
    from robaug._core import image as _image

    g = torch.Generator().manual_seed(0)
    y = torch.randn(shape, generator=g) * 0.7 + 0.5
    y.view(-1)[:4] = torch.tensor([-0.1, 1.2, 0.5 / 255, 254.5 / 255])  # clip both sides, round half to even
    expected = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    before = y.clone()
    assert torch.equal(_image.float_to_uint8(y), expected)
    monkeypatch.setattr(_image, "_UINT8_CHUNK_ELEMENTS", 3)  # force the chunked path, incl. a strided input
    assert torch.equal(_image.float_to_uint8(y), expected)
    if y.ndim == 4:
        assert torch.equal(_image.float_to_uint8(y[::2]), expected[::2])
    assert torch.equal(y, before)  # input untouched
