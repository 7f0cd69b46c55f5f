"""A worked example of an own architecture: `model: user_models.example:tiny_net`."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    cam_layer = "features"  # CAM reads the last convolution's activated output

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_net(num_classes: int, in_channels: int) -> TinyNet:
    return TinyNet(num_classes, in_channels)
