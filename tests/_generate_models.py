"""Tiny models for the generation tests, importable by `robaug generate --model _generate_models:make_denoiser`
(tests/ on PYTHONPATH). ROBAUG_TEST_DELAY (seconds per network call) slows a run down for the kill test."""

import os
import time

import torch
from torch import nn

from robaug.diffusion import CallableDenoiser


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.zero_()
        self.emb = nn.Embedding(4, 1)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[-0.4], [0.0], [0.4], [0.0]]))

    def forward(self, x, s, y):
        delay = float(os.environ.get("ROBAUG_TEST_DELAY", "0"))
        if delay:
            time.sleep(delay)
        s = s.to(x.dtype).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x / torch.sqrt(1 + s * s)) + self.emb(y).view(-1, 1, 1, 1))


def make_denoiser():
    return CallableDenoiser(TinyNet(), in_channels=1, sample_size=8, num_classes=3, null_label=3,
                            sigma_min=0.01, sigma_max=20.0)


class TinyClassifier(nn.Module):
    """Mean brightness -> 3 classes (dark / mid / bright)."""

    def forward(self, img):
        m = img.flatten(1).mean(1, keepdim=True)
        return torch.cat([-(m - 0.3) ** 2, -(m - 0.5) ** 2, -(m - 0.7) ** 2], 1) * 200


def make_classifier():
    return TinyClassifier()
