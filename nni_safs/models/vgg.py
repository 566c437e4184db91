"""VGG in CIFAR form: Conv-BN-act blocks, max-pools, one Linear(512, classes) head.

``vgg16`` is the paper's network: 13 convolutions, every activation a slot the forward pass
uses. ``vgg11`` is the network the reference code trains as its "VGG-16" (``VGG('VGG11')``):
8 convolutions with biases, so 8 slots (the reference lists 15 activation keys, of which only
the first 8 are wired to layers; the other 7 change nothing and are not slots here).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from nni_safs.models.activations import ActivationSlot

VGG16_CONFIG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG11_CONFIG = ((64,), (128,), (256, 256), (512, 512), (512, 512))


class VGG(nn.Module):
    """Slots are named ``features.act{stage}_{conv}`` (e.g. ``features.act3_2``)."""

    def __init__(self, config=VGG16_CONFIG, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, act: str = "relu", conv_bias: bool = False) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for stage, widths in enumerate(config, start=1):
            for index, width in enumerate(widths, start=1):
                tag = f"{stage}_{index}"
                layers[f"conv{tag}"] = nn.Conv2d(channels, width, 3, padding=1, bias=conv_bias)
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


def vgg11(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """The reference code's "VGG-16": VGG-11 with batch norm and conv biases, for 32x32 images."""
    return VGG(VGG11_CONFIG, num_classes, in_channels, image_size, act, conv_bias=True)
