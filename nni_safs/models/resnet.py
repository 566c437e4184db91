"""ResNet-18 with the CIFAR stem (3x3 conv, no max-pool).

Each BasicBlock has two slots: ``act1`` inside the residual branch and ``act2``, placed by
``slots``: ``after_add`` (``resnet18``, He et al.'s block: after the addition) or ``shortcut``
(``resnet18_shortcut_act``, the reference code's block: on the shortcut, after its projection
if it has one, and no activation after the addition). Both have the same 17 slots.
"""
from __future__ import annotations

from torch import nn

from nni_safs.models.activations import ActivationSlot

SLOT_PLACEMENTS = ("after_add", "shortcut")


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block, each activation a slot."""
    def __init__(self, in_planes: int, planes: int, stride: int, act: str, slots: str = "after_add") -> None:
        super().__init__()
        if slots not in SLOT_PLACEMENTS:
            raise ValueError(f"unknown ResNet slot placement {slots!r}; valid: {', '.join(SLOT_PLACEMENTS)}")
        self.slots = slots
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = ActivationSlot(act)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))
        self.act2 = ActivationSlot(act)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.slots == "shortcut":
            return out + self.act2(self.shortcut(x))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max pool) with its activations as slots."""
    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, act: str = "relu", slots: str = "after_add") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = ActivationSlot(act)
        stages, in_planes = [], 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            strides = [1 if index == 0 else 2] + [1] * (count - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(in_planes, planes, stride, act, slots))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def resnet18(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """ResNet-18 for 32x32 images."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, image_size, act)


def resnet18_shortcut_act(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """The reference code's ResNet-18: each block's second slot on its shortcut, none after the addition."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, image_size, act, slots="shortcut")
