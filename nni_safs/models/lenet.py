"""LeNet-5 (LeCun et al. 1998) for 28x28 digits: two conv layers, three dense layers, no BN.

``lenet5`` is the reference SAFS's ``models.LeNet``: no padding, so fc1 takes 16 x 4 x 4 = 256
inputs. ``lenet5_padded`` pads conv1 by 2 (LeCun's 32x32 input on 28x28 digits: fc1 takes
16 x 5 x 5 = 400), the embedded default's network: at 99 % sparsity its pruned baseline keeps
more of its accuracy.
"""
from __future__ import annotations

from torch import nn

from nni_safs.models.activations import ActivationSlot


class LeNet5(nn.Module):
    """Slots ``act1``..``act4`` follow conv1, conv2, fc1, fc2 (the paper's four activations)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 act: str = "relu", padding: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.act1 = ActivationSlot(act)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = ActivationSlot(act)
        self.pool2 = nn.MaxPool2d(2)
        side = ((image_size + 2 * padding - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.act3 = ActivationSlot(act)
        self.fc2 = nn.Linear(120, 84)
        self.act4 = ActivationSlot(act)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = x.flatten(1)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """The reference SAFS's LeNet-5 (no padding, fc1 of 256 inputs)."""
    return LeNet5(num_classes, in_channels, image_size, act)


def lenet5_padded(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """LeNet-5 with conv1 padded by 2 (fc1 of 400 inputs): the embedded default's network."""
    return LeNet5(num_classes, in_channels, image_size, act, padding=2)
