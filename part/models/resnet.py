"""CIFAR ResNet-18 as in the Madry / TRADES / PART code: 3x3 stem at stride 1, no max-pool."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from part.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def residual_stages(block: Callable[[int, int, int], nn.Module],
                    blocks_per_stage: list[int]) -> list[nn.Sequential]:
    """The four stages of a CIFAR ResNet (64, 128, 256 and 512 planes, the first at stride 1, the
    others halving the size), each a sequence of `block(in_planes, planes, stride)`, built in
    order so that a seed gives the same initial weights."""
    stages, in_planes = [], 64
    for planes, count, stride in zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2),
                                     strict=True):
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(block(in_planes, planes, block_stride))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages


class ResNet(nn.Module):
    # layer4's output is post-ReLU: the activated last feature map, as in the paper's CAM.
    cam_layer = "layer4"

    def __init__(self, blocks_per_stage: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = residual_stages(BasicBlock,
                                                                             blocks_per_stage)
        # Adaptive pooling (not a fixed 4x4 pool) so 28, 32 and 64 pixel inputs all work.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


@register_model("resnet18", "CIFAR ResNet-18 (Madry/TRADES style), 11.17M params")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes, in_channels)
