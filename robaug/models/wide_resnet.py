"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016), WRN-d-k for small images.

depth d = 6 n + 4 with n pre-activation basic blocks in each of three stages of 16k, 32k and 64k channels
(strides 1, 2, 2), a 3x3 stem with 16 channels, a final BN-activation, global average pooling and a linear head.
WRN-28-10 has 36.5M parameters and WRN-40-4 8.9M for 10 classes. ``activation="silu"`` gives the variant used by
Wang et al. (ICML 2023) for adversarial training with generated data; ``dropout`` is the paper's dropout between
the two convolutions of a block (0.3 in the WRN paper, 0 in AugMix/IPMix).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WideBasicBlock", "WideResNet", "wide_resnet"]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()](inplace=True)
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


class WideBasicBlock(nn.Module):
    """BN-act-conv3x3(stride)-BN-act-dropout-conv3x3 plus an identity or 1x1 projection shortcut."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = _activation(activation)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = _activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen_factor; see the module docstring."""

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor, self.in_channels = depth, widen_factor, in_channels
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        in_planes = widths[0]
        for i, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = []
            for j in range(n):
                blocks.append(WideBasicBlock(in_planes, w, stride if j == 0 else 1, dropout, activation))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = _activation(activation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_features = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, shape ``(B, num_features)``."""
        out = self.act(self.bn(self.layers(self.conv1(x))))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def wide_resnet(
    depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3, **kwargs
) -> WideResNet:
    """Build WRN-``depth``-``widen_factor`` (keyword arguments: ``dropout``, ``activation``)."""
    return WideResNet(depth, widen_factor, num_classes=num_classes, in_channels=in_channels, **kwargs)
