"""PreAct ResNet-18 (He et al. 2016, CIFAR variant) with the final BN-ReLU before pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from part.models.registry import register_model
from part.models.resnet import residual_stages


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the activated input, as in He et al. (2016).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    # layer4's output is a pre-activation residual sum (can be negative); `final_act` is the
    # BN-ReLU'd map the classifier pools over. CAM uses the latter: with non-negative features
    # followed by pool + linear, GradCAM equals the classic CAM of Zhou et al. (2016).
    cam_layer = "final_act"

    def __init__(self, blocks_per_stage: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1, self.layer2, self.layer3, self.layer4 = residual_stages(PreActBlock,
                                                                             blocks_per_stage)
        self.final_act = nn.Sequential()
        self.final_act.add_module("bn", nn.BatchNorm2d(512))
        self.final_act.add_module("relu", nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.final_act(out)
        return self.linear(torch.flatten(self.pool(out), 1))


@register_model("preact_resnet18", "PreAct ResNet-18 (He et al. 2016), CIFAR stem")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels)
