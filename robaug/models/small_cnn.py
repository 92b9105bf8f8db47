"""A tiny CNN for CPU tests and minute-scale Fashion-MNIST runs (about 0.1M parameters)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """conv3x3(w)-conv3x3(2w, stride 2)-conv3x3(4w, stride 2), each with BN-ReLU, global pooling, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.num_features = c_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))
