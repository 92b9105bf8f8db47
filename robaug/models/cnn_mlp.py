"""A two-block CNN with a fully connected head: the classic Fashion-MNIST network (about 0.2M parameters at
width 16), cheap on a CPU and above 90% clean accuracy on Fashion-MNIST in a few epochs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNNMLP"]


class CNNMLP(nn.Module):
    """[conv3x3(w)-BN-ReLU-maxpool2] - [conv3x3(2w)-BN-ReLU-maxpool2] - pool to 7x7 - linear(hidden)-ReLU - linear.

    The adaptive pool to a 7x7 grid makes the head independent of the input size (an identity for 28x28 inputs);
    :meth:`forward_features` returns the ``hidden``-dimensional penultimate features.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16, hidden: int = 128) -> None:
        super().__init__()
        if width < 1 or hidden < 1:
            raise ValueError(f"width and hidden must be positive, got width={width}, hidden={hidden}")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in (width, 2 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c_in * 49, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)
        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))
