"""robaug._core.rng: draws on the generator's device (the global RNG of the target device without one), moved to
the target device. References: torch's own draws from a generator with the same seed."""

import pytest
import torch

from robaug._core import rng

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rand_randn_match_torch_draws_on_a_cpu_generator(dtype):
    got_u = rng.rand((4, 5), _gen(1), "cpu", dtype)
    got_n = rng.randn((4, 5), _gen(2), "cpu", dtype)
    # drawn in float32 whatever the output dtype, then cast (so half/double callers see the same numbers)
    assert torch.equal(got_u, torch.rand(4, 5, generator=_gen(1)).to(dtype))
    assert torch.equal(got_n, torch.randn(4, 5, generator=_gen(2)).to(dtype))
    assert got_u.dtype == got_n.dtype == dtype


def test_randint_matches_torch_and_stays_in_range():
    got = rng.randint(3, 9, (1000,), _gen(3), "cpu")
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.randint(3, 9, (1000,), generator=_gen(3)))
    assert int(got.min()) == 3 and int(got.max()) == 8


def test_successive_draws_consume_the_generator_like_torch():
    g_ours, g_ref = _gen(4), _gen(4)
    ours = [rng.rand((3,), g_ours, "cpu"), rng.randn((2, 2), g_ours, "cpu"), rng.randint(0, 5, (6,), g_ours, "cpu")]
    ref = [torch.rand(3, generator=g_ref), torch.randn(2, 2, generator=g_ref),
           torch.randint(0, 5, (6,), generator=g_ref)]
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert torch.equal(g_ours.get_state(), g_ref.get_state())


def test_cpu_generator_with_meta_target_draws_on_cpu_and_returns_meta():
    g_ours, g_ref = _gen(5), _gen(5)
    out = rng.rand((2, 3), g_ours, "meta")
    assert out.device.type == "meta" and out.shape == (2, 3)
    torch.rand(2, 3, generator=g_ref)
    # the numbers were drawn from the CPU generator: its state moved exactly as a CPU draw moves it
    assert torch.equal(g_ours.get_state(), g_ref.get_state())
    assert rng.randn((4,), g_ours, torch.device("meta")).device.type == "meta"
    assert rng.randint(0, 3, (4,), g_ours, "meta").device.type == "meta"
    assert rng.random_bytes((3, 5), g_ours, "meta").shape == (3, 5)


def test_without_a_generator_the_target_device_global_rng_is_used():
    assert rng.draw_device(None, "meta") == torch.device("meta")
    assert rng.draw_device(_gen(0), "meta") == torch.device("cpu")
    torch.manual_seed(7)
    a = rng.rand((5,), None, "cpu")
    torch.manual_seed(7)
    assert torch.equal(a, torch.rand(5))
    assert rng.rand((5,), None, "meta").device.type == "meta"


def test_rng_object_binds_device_and_generator():
    r = rng.Rng("cpu", _gen(8))
    g = _gen(8)
    assert torch.equal(r.rand(2, 3), torch.rand(2, 3, generator=g))
    assert torch.equal(r.randn(4), torch.randn(4, generator=g))
    assert torch.equal(r.randint(0, 10, 3, 2), torch.randint(0, 10, (3, 2), generator=g))
    assert r.bytes(5, 3).shape == (5, 3)
    assert r.rand(2, dtype=torch.float64).dtype == torch.float64


def test_check_generator_names_the_owner():
    rng.check_generator(None)
    rng.check_generator(_gen(0))
    with pytest.raises(TypeError, match=r"IPMix\.generator must be a torch\.Generator or None, got int"):
        rng.check_generator(0, "IPMix.generator")


@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (8,), (0, 4), ()])
def test_random_bytes_shape_dtype_and_reproducibility(shape):
    a = rng.random_bytes(shape, _gen(9), "cpu")
    b = rng.random_bytes(shape, _gen(9), "cpu")
    assert a.shape == torch.Size(shape) and a.dtype == torch.uint8 and a.device.type == "cpu"
    assert torch.equal(a, b)
    if a.numel() > 1:
        assert not torch.equal(a, rng.random_bytes(shape, _gen(10), "cpu"))


def test_random_bytes_are_uniform_over_all_256_values():
    x = rng.random_bytes((256 * 400,), _gen(11), "cpu").long()
    counts = torch.bincount(x, minlength=256).double()
    chi2 = float(((counts - 400) ** 2 / 400).sum())  # 255 degrees of freedom: mean 255, sd ~22.6
    assert chi2 < 255 + 6 * 22.6
    # every bit of every byte position in a 64-bit word is a fair coin (random_() without bounds would leave
    # the top bit of each word 0, i.e. byte 7 would never reach 128)
    words = x[: x.numel() // 8 * 8].view(-1, 8)
    bits = torch.stack([(words >> k) & 1 for k in range(8)], dim=-1).float().mean(0)  # (byte position, bit)
    n = words.shape[0]
    assert (bits - 0.5).abs().max() < 5 * 0.5 / n**0.5


def test_random_bytes_consecutive_draws_differ():
    g = _gen(12)
    a, b = rng.random_bytes((64,), g, "cpu"), rng.random_bytes((64,), g, "cpu")
    assert not torch.equal(a, b)


@cuda
@pytest.mark.cuda
def test_cuda_generator_with_cpu_target_gives_the_cuda_numbers():
    ref_u = torch.rand(16, generator=_gen(0, "cuda"), device="cuda").cpu()
    ref_n = torch.randn(16, generator=_gen(1, "cuda"), device="cuda").cpu()
    ref_i = torch.randint(0, 7, (16,), generator=_gen(2, "cuda"), device="cuda").cpu()
    assert torch.equal(rng.rand((16,), _gen(0, "cuda"), "cpu"), ref_u)
    assert torch.equal(rng.randn((16,), _gen(1, "cuda"), "cpu"), ref_n)
    assert torch.equal(rng.randint(0, 7, (16,), _gen(2, "cuda"), "cpu"), ref_i)


@cuda
@pytest.mark.cuda
def test_cpu_generator_with_cuda_target_gives_the_cpu_numbers():
    out = rng.randn((16,), _gen(3), "cuda")
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), torch.randn(16, generator=_gen(3)))
    assert torch.equal(rng.random_bytes((33,), _gen(4), "cuda").cpu(), rng.random_bytes((33,), _gen(4), "cpu"))
