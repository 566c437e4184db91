"""Model registry: the paper's networks with every activation replaced by a named slot.

``build_model(name, num_classes, ...)`` builds a registered model; a user adds one with
``@register_model("name", hparams=..., in_channels=..., image_size=..., act=...)`` on a builder
``(num_classes, in_channels, image_size, act) -> nn.Module`` whose activations are
:class:`~nni_safs.activations.ActivationSlot` modules. What is registered with it is what the
rest of the package knows about the model: its dense fine-tuning hyperparameters (the
``train_hparams`` default), its own activation, and the input it expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn

MODELS: Registry = Registry("model")
# the reference SAFS's dense, baseline and stage-1 fine-tuning of each model (Loni et al. 2023,
# automl/SAFS); schedulers as nni_safs.training defines them
_SGD = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}
PAPER_VGG16 = {**_SGD, "scheduler": "step_halving", "step_size": 20}
PAPER_RESNET18 = {**_SGD, "scheduler": "plateau"}  # x0.05 after 2 epochs without a lower training loss
PAPER_EFFICIENTNET_B0 = {**_SGD, "scheduler": "cosine_warm_restarts"}  # T_0 = epochs / 4, eta_min 5e-5
PAPER_LENET5 = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "constant"}


@dataclass(frozen=True)
class ModelFacts:
    hparams: Mapping[str, Any] | None  # dense/baseline fine-tuning hyperparameters; None: none known
    in_channels: int
    image_size: int
    act: str  # the model's own activation (the baseline's and the ablation's)


def register_model(name: str, *, in_channels: int, image_size: int, act: str = "relu",
                   hparams: Mapping[str, Any] | None = None, overwrite: bool = False) -> Callable:
    """Decorator registering a builder (or its ``"module:function"``, imported when first built)
    with its facts: the input it expects (no default: a model is not silently given CIFAR's),
    its own activation, and its dense fine-tuning hyperparameters (without them the config's
    ``train_hparams`` must give them)."""
    facts = ModelFacts(dict(hparams) if hparams is not None else None, in_channels, image_size, act)
    return MODELS.register(name, overwrite=overwrite, facts=facts)


def model_facts(name: str) -> ModelFacts:
    return MODELS.facts(name)


def build_model(name: str, num_classes: int = 10, in_channels: int | None = None,
                image_size: int | None = None, act: str | None = None) -> nn.Module:
    """Build ``name``; ``None`` arguments take the model's registered facts (e.g. its paper act)."""
    builder, facts = MODELS.get(name), model_facts(name)
    return builder(num_classes=num_classes, in_channels=in_channels or facts.in_channels,
                   image_size=image_size or facts.image_size, act=act or facts.act)


def list_models() -> list[str]:
    return MODELS.names()


# the built-ins and their facts; each builder's module (and torch) is imported when it is first built
register_model("lenet5", hparams=PAPER_LENET5, in_channels=1, image_size=28)("nni_safs.models.lenet:lenet5")
register_model("lenet5_padded", hparams=PAPER_LENET5, in_channels=1, image_size=28)(
    "nni_safs.models.lenet:lenet5_padded")
register_model("vgg16", hparams=PAPER_VGG16, in_channels=3, image_size=32)("nni_safs.models.vgg:vgg16")
register_model("resnet18", hparams=PAPER_RESNET18, in_channels=3, image_size=32)("nni_safs.models.resnet:resnet18")
register_model("efficientnet_b0", hparams=PAPER_EFFICIENTNET_B0, in_channels=3, image_size=16,
               act="swish")("nni_safs.models.efficientnet:efficientnet_b0")
