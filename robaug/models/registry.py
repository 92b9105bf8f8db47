"""Name -> classifier registry used by the training recipes and the evaluation.

``create_model(name, num_classes, in_channels=3, **kw)`` builds any of ``list_models()``; every model takes
``(B, in_channels, H, W)`` float images (28x28 grayscale Fashion-MNIST and 32x32 RGB CIFAR included) and returns
logits. ``img_size`` may always be passed: transformers use it for their token grid, convolutional networks
take any size and ignore it. torchvision's ``resnet50`` and ``vit_b_16`` are built with ``weights=None`` and the
first layer adapted to ``in_channels``; ``vit_b_16`` resizes inputs of another size to its ``img_size``
(default 224, a multiple of 16).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robaug._core.registry import Registry, unknown_name_message

from .cnn_mlp import CNNMLP
from .preact_resnet import preact_resnet18
from .small_cnn import SmallCNN
from .vit import vit_small, vit_tiny
from .wide_resnet import WideResNet

__all__ = ["create_model", "list_models", "register_model", "Normalized"]

#: name -> builder ``fn(num_classes, in_channels, img_size=None, **kw) -> nn.Module``
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding ``fn(num_classes, in_channels, img_size=None, **kw) -> nn.Module`` under ``name``."""

    return MODELS.register(name)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODELS.names())


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build classifier ``name`` with ``num_classes`` outputs for ``in_channels``-channel images.

    Extra keyword arguments go to the architecture (e.g. ``dropout``/``activation`` for WRNs, ``patch_size``,
    ``img_size`` for ViTs, ``cifar_stem`` for ``resnet50``).
    """
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(unknown_name_message("model", name, list_models()) + " (--model)")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    return MODELS[key](num_classes=num_classes, in_channels=in_channels, **kwargs)


class Normalized(nn.Module):
    """``model((x - mean) / std)``: lets a classifier trained on normalised inputs take ``[0, 1]`` images,
    which the DiffAug ensemble and the corruption evaluation feed it."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


# --- CIFAR-style architectures -------------------------------------------------------------------------------


@register_model("small_cnn")
def _small_cnn(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
    return SmallCNN(num_classes, in_channels, **kw)


@register_model("cnn_mlp")
def _cnn_mlp(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
    return CNNMLP(num_classes, in_channels, **kw)


@register_model("preact_resnet18")
def _preact_resnet18(num_classes: int, in_channels: int, img_size: int | None = None) -> nn.Module:
    return preact_resnet18(num_classes, in_channels)


def _wrn(depth: int, width: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
        return WideResNet(depth, width, num_classes=num_classes, in_channels=in_channels, **kw)

    build.__doc__ = f"WRN-{depth}-{width}"
    return build


for _d, _k in ((16, 2), (16, 4), (28, 10), (40, 2), (40, 4)):
    register_model(f"wrn_{_d}_{_k}")(_wrn(_d, _k))


@register_model("vit_tiny")
def _vit_tiny(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
    return vit_tiny(num_classes, in_channels, img_size=img_size or 32, **kw)


@register_model("vit_small")
def _vit_small(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
    return vit_small(num_classes, in_channels, img_size=img_size or 32, **kw)


# --- torchvision ImageNet architectures ----------------------------------------------------------------------


@register_model("resnet50")
def _resnet50(
    num_classes: int, in_channels: int, img_size: int | None = None, cifar_stem: bool = False, **kw: Any
) -> nn.Module:
    """torchvision ResNet-50 (weights=None). ``cifar_stem=True`` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv."""
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=num_classes, **kw)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def _resizing_vit_class() -> type:
    from torchvision.models.vision_transformer import VisionTransformer

    class ResizingVisionTransformer(VisionTransformer):
        """torchvision's VisionTransformer that resizes (bilinear, antialiased) inputs of another size to
        ``image_size``; the state_dict is torchvision's."""

        def _process_input(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(
                    x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
                )
            return super()._process_input(x)

    return ResizingVisionTransformer


@register_model("vit_b_16")
def _vit_b_16(num_classes: int, in_channels: int, img_size: int | None = None, **kw: Any) -> nn.Module:
    """torchvision ViT-B/16 (weights=None); ``img_size`` is rounded up to a multiple of 16 (default 224)."""
    size = 16 * math.ceil((img_size or 224) / 16)
    cfg = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072) | kw
    model = _resizing_vit_class()(image_size=size, num_classes=num_classes, **cfg)
    if in_channels != 3:
        hidden, patch = model.hidden_dim, model.patch_size
        model.conv_proj = nn.Conv2d(in_channels, hidden, patch, stride=patch)
        fan_in = in_channels * patch * patch
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(model.conv_proj.bias)
    return model
