"""The denoiser interface: CallableDenoiser wraps any function; what an adapter declares (casts_network_input) is
what guidance reads, for robaug's adapters and a user's own Denoiser subclass alike."""

import pytest
import torch
from torch import nn

from robaug.diffusion import CallableDenoiser, Denoiser, DiffusersDenoiser, EDMDenoiser
from robaug.diffusion.guidance import GuidedDenoiser


def test_callable_denoiser_gets_batched_sigma_and_registers_modules():
    seen = {}

    def fn(x, sigma, labels):
        seen["sigma"], seen["labels"] = sigma, labels
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)  # the MMSE denoiser for x0 ~ N(0, I)

    d = CallableDenoiser(fn, in_channels=1)
    x = torch.randn(4, 1, 5, 5)
    out = d(x, 2.0)
    assert seen["sigma"].shape == (4,) and seen["labels"] is None
    torch.testing.assert_close(out, x / 5)
    conv = nn.Conv2d(3, 3, 1)
    d2 = CallableDenoiser(lambda x, s, y: conv(x))
    d3 = CallableDenoiser(conv.__call__)
    assert len(list(CallableDenoiser(conv).parameters())) == 2 and not list(d3.parameters())
    assert isinstance(d2, Denoiser)
    with pytest.raises(TypeError):
        CallableDenoiser(3)


class _OwnCastDenoiser(Denoiser):
    """A user's adapter around a float32 net that casts the net's input itself (as robaug's adapters do)."""

    casts_network_input = True

    def __init__(self):
        super().__init__(in_channels=1, sigma_min=0.01, sigma_max=10.0)
        self.net = nn.Conv2d(1, 1, 1)
        self.seen = []

    def denoise(self, x, sigma, class_labels):
        self.seen.append(x.dtype)
        return self.net(x.float()).to(x.dtype)


def test_guidance_asks_the_denoiser_which_dtype_it_takes():
    """The sampler state (float64) goes straight to denoisers that declare casts_network_input; others get their
    weights' dtype. No isinstance check on robaug's adapter classes decides this."""
    assert DiffusersDenoiser.casts_network_input and EDMDenoiser.casts_network_input
    assert not CallableDenoiser.casts_network_input and not Denoiser.casts_network_input
    own = _OwnCastDenoiser()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    out = GuidedDenoiser(own)(x, 1.0)
    assert own.seen == [torch.float64] and out.dtype == torch.float64
    assert GuidedDenoiser(own).input_dtype(torch.float64) == torch.float64
    seen = []
    net = nn.Conv2d(1, 1, 1)
    wrapped = CallableDenoiser(lambda x, s, y: (seen.append(x.dtype), net(x))[1], in_channels=1)
    wrapped.register_module("net", net)
    GuidedDenoiser(wrapped)(x, 1.0)
    assert seen == [torch.float32]  # a float32 network behind a plain callable gets float32
    assert GuidedDenoiser(wrapped.to(torch.bfloat16)).input_dtype(torch.float64) == torch.bfloat16
    assert GuidedDenoiser(own, model_dtype=torch.float32).input_dtype(torch.float64) == torch.float32
