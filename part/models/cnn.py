"""A small CNN sized for a 2-core CPU: conv32-pool-conv64-pool-conv128, BN + ReLU, GAP, linear.

About 94k parameters; a forward + backward on 128 Fashion-MNIST images takes ~90 ms on 2 cores,
so one PGD-10 adversarial-training epoch over 10,000 images takes roughly 80 s.
"""

from __future__ import annotations

import torch
from torch import nn

from part.models.registry import register_model


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, group_norm: bool = False) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))
        # GroupNorm (8 groups) normalises each image by itself: no batch statistics
        self.add_module("bn", nn.GroupNorm(8, out_channels) if group_norm
                        else nn.BatchNorm2d(out_channels))
        self.add_module("relu", nn.ReLU())


class SmallCNN(nn.Module):
    # block3 is the activated last conv feature map (7x7 at 28x28 input).
    cam_layer = "block3"

    def __init__(self, num_classes: int, in_channels: int, group_norm: bool = False) -> None:
        super().__init__()
        self.block1 = ConvBNReLU(in_channels, 32, group_norm)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = ConvBNReLU(32, 64, group_norm)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = ConvBNReLU(64, 128, group_norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool1(self.block1(x))
        out = self.pool2(self.block2(out))
        out = self.block3(out)
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("cnn_small", "small CPU-sized CNN (~94k params) for Fashion-MNIST runs")
def cnn_small(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return SmallCNN(num_classes, in_channels)


@register_model("cnn_small_gn", "cnn_small with GroupNorm instead of batch norm: no batch "
                "statistics, so a run's result does not depend on how its batches are split")
def cnn_small_gn(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, group_norm=True)
