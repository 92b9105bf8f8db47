"""robaug._core.modules: the device and dtype a module computes on, with defaults for callables."""

import torch
from torch import nn

from robaug._core.modules import module_device, module_dtype


def test_device_of_parameters_and_buffers():
    assert module_device(nn.Linear(2, 3)) == torch.device("cpu")
    with torch.device("meta"):
        lin = nn.Linear(2, 3)
    assert module_device(lin) == torch.device("meta")

    class BufferOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.zeros(3, device="meta"))

    assert module_device(BufferOnly()) == torch.device("meta")


def test_device_defaults_for_callables_and_parameter_free_modules():
    assert module_device(lambda x: x) == torch.device("cpu")
    assert module_device(nn.ReLU(), default="meta") == torch.device("meta")
    assert module_device(print, default=torch.device("meta")) == torch.device("meta")


def test_dtype_is_the_first_floating_parameter():
    assert module_dtype(nn.Linear(2, 2), torch.float32) == torch.float32
    assert module_dtype(nn.Linear(2, 2).half(), torch.float32) == torch.float16
    assert module_dtype(nn.Linear(2, 2).double(), torch.float32) == torch.float64

    class IntFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.index = nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)
            self.lin = nn.Linear(2, 2).to(torch.bfloat16)

    assert module_dtype(IntFirst(), torch.float32) == torch.bfloat16


def test_dtype_defaults_for_callables_and_parameter_free_modules():
    assert module_dtype(lambda x: x, torch.float16) == torch.float16
    assert module_dtype(nn.Identity(), torch.float64) == torch.float64
