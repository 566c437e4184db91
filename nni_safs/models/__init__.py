"""Model registry: the paper's networks with every activation replaced by a named slot.

``build_model(name, num_classes, ...)`` builds a registered model; a user adds one with
``@register_model("name", hparams=..., in_channels=..., image_size=..., act=...)`` on a builder
``(num_classes, in_channels, image_size, act) -> nn.Module`` whose activations are
:class:`~nni_safs.models.activations.ActivationSlot` modules. What is registered with it is what the
rest of the package knows about the model: its dense fine-tuning hyperparameters (the
``train_hparams`` default), its own activation, and the input it expects.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nni_safs.settings.catalog import MODELS, ModelFacts, model_facts, register_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "ModelFacts", "build_model", "list_models", "model_facts", "register_model"]


def build_model(name: str, num_classes: int = 10, in_channels: int | None = None,
                image_size: int | None = None, act: str | None = None) -> nn.Module:
    """Build ``name``; ``None`` arguments take the model's registered facts (e.g. its paper act)."""
    builder, facts = MODELS.get(name), model_facts(name)
    return builder(num_classes=num_classes, in_channels=in_channels or facts.in_channels,
                   image_size=image_size or facts.image_size, act=act or facts.act)


def list_models() -> list[str]:
    """Every registered model name."""
    return MODELS.names()
