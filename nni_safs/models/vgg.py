"""VGG-16 in CIFAR form: 13 Conv-BN-act blocks and one Linear(512, classes) head.

Unlike the reference code (whose "VGG-16" has 8 convs and half its slots unwired), every one
of the 13 activations here is a slot that the forward pass uses.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from nni_safs.models.activations import ActivationSlot

VGG16_CONFIG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(nn.Module):
    """Slots are named ``features.act{stage}_{conv}`` (e.g. ``features.act3_2``)."""

    def __init__(self, config=VGG16_CONFIG, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, act: str = "relu") -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for stage, widths in enumerate(config, start=1):
            for index, width in enumerate(widths, start=1):
                tag = f"{stage}_{index}"
                layers[f"conv{tag}"] = nn.Conv2d(channels, width, 3, padding=1, bias=False)
                layers[f"bn{tag}"] = nn.BatchNorm2d(width)
                layers[f"act{tag}"] = ActivationSlot(act)
                channels = width
            layers[f"pool{stage}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg16(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """VGG-16 with batch norm for 32x32 images."""
    return VGG(VGG16_CONFIG, num_classes, in_channels, image_size, act)
