"""EfficientNet-B0 from torchvision's building blocks, every SiLU turned into a slot.

The paper's ImageNet-16 setup keeps the blocks and their default activation (swish) with a
stride-1 stem, as the reference's CIFAR-style variant: ImageNet's stride-2 stem would leave 1x1
feature maps from the fourth stage on at 16x16. torchvision builds it without downloading
weights. Slots are named by module path (e.g. ``features.1.0.block.0.2``), including the
squeeze-excitation activations.
"""
from __future__ import annotations

from torch import nn

from nni_safs.models.activations import ActivationSlot


def replace_activations(model: nn.Module, kind: type[nn.Module], act: str) -> nn.Module:
    """Swap every ``kind`` module of ``model`` for an ``ActivationSlot(act)`` in place."""
    targets = [name for name, module in model.named_modules() if isinstance(module, kind)]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ActivationSlot(act))
    return model


def efficientnet_b0(num_classes: int, in_channels: int, image_size: int, act: str) -> nn.Module:
    """torchvision's EfficientNet-B0 with its activations as slots and a stride-1 stem (the reference's)."""
    from torchvision.models import efficientnet_b0 as tv_efficientnet_b0  # only when built: heavy import

    model = tv_efficientnet_b0(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, 1, stem.padding, bias=False)
    return replace_activations(model, nn.SiLU, act)
