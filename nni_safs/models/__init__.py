"""Model registry: the paper's networks with every activation replaced by a named slot.

``build_model(name, num_classes, ...)`` builds a registered model; a user adds one with
``@register_model("name")`` on a builder ``(num_classes, in_channels, image_size, act) -> nn.Module``
whose activations are :class:`~nni_safs.activations.ActivationSlot` modules.
"""
from __future__ import annotations

from torch import nn

from ..registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def build_model(name: str, num_classes: int = 10, in_channels: int | None = None,
                image_size: int | None = None, act: str | None = None) -> nn.Module:
    """Build ``name``; ``None`` arguments take the model's own defaults (e.g. its paper act)."""
    builder = MODELS.get(name)
    kwargs = {k: v for k, v in dict(in_channels=in_channels, image_size=image_size, act=act).items()
              if v is not None}
    return builder(num_classes=num_classes, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


from . import lenet, vgg, resnet, efficientnet  # noqa: E402,F401  (registers the built-ins)
