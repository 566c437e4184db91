"""A user's own model and dataset, registered outside nni_safs (tests/test_plugins.py runs it)."""
from torch import nn

from nni_safs.activations import ActivationSlot
from nni_safs.data import DATASETS, register_dataset
from nni_safs.models import register_model


@register_model("plugin_mlp", hparams={"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4}, in_channels=1,
                image_size=28)
def plugin_mlp(num_classes=10, in_channels=1, image_size=28, act="relu"):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 64), ActivationSlot(act),
                         nn.Linear(64, 32), ActivationSlot(act), nn.Linear(32, num_classes))


@register_dataset("plugin_digits")
def plugin_digits(root=None, seed=0, val_fraction=0.1, download=False, **options):
    """The embedded digits under another name, built by the user's own function."""
    return DATASETS.get("mnist5k")(root=root, seed=seed, val_fraction=val_fraction, download=download)
