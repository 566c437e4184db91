"""The registered models and datasets, with what the rest of the package knows of each.

A model's facts are its dense fine-tuning hyperparameters (the ``train_hparams`` default), its
own activation and the input it expects; a dataset's are the files it reads under
``data_root``. The built-ins are registered by ``"module:function"`` (:mod:`nni_safs.models`,
:mod:`nni_safs.data`), imported when first built, so checking a run's settings imports no
torch. Users register through ``nni_safs.models.register_model`` and
``nni_safs.data.register_dataset``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from nni_safs.settings.dataset_files import CIFAR10_FILES, IMAGENET16_TRAIN_FILES, IMAGENET16_VAL_FILE, MNIST_FILES
from nni_safs.settings.registry import Registry

MODELS: Registry = Registry("model")
# the reference SAFS's dense, baseline and stage-1 fine-tuning of each model (Loni et al. 2023,
# automl/SAFS); schedulers as nni_safs.training.loop defines them
_SGD = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}
PAPER_VGG16 = {**_SGD, "scheduler": "step_halving", "step_size": 20}
PAPER_RESNET18 = {**_SGD, "scheduler": "plateau"}  # x0.05 after 2 epochs without a lower training loss
PAPER_EFFICIENTNET_B0 = {**_SGD, "scheduler": "cosine_warm_restarts"}  # T_0 = epochs / 4, eta_min 5e-5
# the reference builds every Adam with betas (0.9, 0.99)
PAPER_LENET5 = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "beta2": 0.99, "scheduler": "constant"}
# the embedded default's network keeps torch's beta2 0.999, with which its settings were measured
EMBEDDED_LENET5 = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "constant"}


@dataclass(frozen=True)
class ModelFacts:
    """What the package knows of a registered model besides its builder."""
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
    """The facts registered with model ``name`` (a ValueError listing the models if unknown)."""
    return MODELS.facts(name)


# the built-ins and their facts; each builder's module (and torch) is imported when it is first built
register_model("lenet5", hparams=PAPER_LENET5, in_channels=1, image_size=28)("nni_safs.models.lenet:lenet5")
register_model("lenet5_padded", hparams=EMBEDDED_LENET5, in_channels=1, image_size=28)(
    "nni_safs.models.lenet:lenet5_padded")
register_model("vgg16", hparams=PAPER_VGG16, in_channels=3, image_size=32)("nni_safs.models.vgg:vgg16")
register_model("vgg11", hparams=PAPER_VGG16, in_channels=3, image_size=32)("nni_safs.models.vgg:vgg11")
register_model("resnet18", hparams=PAPER_RESNET18, in_channels=3, image_size=32)("nni_safs.models.resnet:resnet18")
register_model("resnet18_shortcut_act", hparams=PAPER_RESNET18, in_channels=3, image_size=32)(
    "nni_safs.models.resnet:resnet18_shortcut_act")
register_model("efficientnet_b0", hparams=PAPER_EFFICIENTNET_B0, in_channels=3, image_size=16,
               act="swish")("nni_safs.models.efficientnet:efficientnet_b0")


DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class DatasetFacts:
    """What the package knows of a registered dataset besides its builder."""
    files: tuple[str, ...]  # paths under data_root the builder reads (checked before any trial runs)
    downloadable: bool  # ``download: true`` fetches them (torchvision's datasets)


def register_dataset(name: str, *, files: Sequence[str] = (), downloadable: bool = False,
                     overwrite: bool = False) -> Callable:
    """Decorator registering a builder (or its ``"module:function"``, imported when first built)
    with the files it reads under ``data_root`` (none: it needs no root, or checks for itself)
    and whether it can download them."""
    return DATASETS.register(name, overwrite=overwrite, facts=DatasetFacts(tuple(files), downloadable))


# the built-ins and their files; each builder's module (and torch) is imported when it is first built
register_dataset("mnist5k")("nni_safs.data.mnist5k:mnist5k")
register_dataset("synthetic")("nni_safs.data.synthetic:synthetic")
register_dataset("mnist", files=MNIST_FILES, downloadable=True)("nni_safs.data.vision:mnist")
register_dataset("cifar10", files=CIFAR10_FILES, downloadable=True)("nni_safs.data.vision:cifar10")
register_dataset("imagenet16",
                 files=[*IMAGENET16_TRAIN_FILES, IMAGENET16_VAL_FILE])("nni_safs.data.imagenet16:imagenet16")
