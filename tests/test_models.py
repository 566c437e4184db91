import pytest
import torch
from torch import nn

from nni_safs.models import build_model, list_models, model_facts, register_model
from nni_safs.models.activations import ActivationSlot, apply_genome, get_genome, slots
from nni_safs.settings.config import SafsConfig


@pytest.mark.parametrize("name,shape,num_slots,convs", [
    ("lenet5", (2, 1, 28, 28), 4, 2),
    ("vgg16", (2, 3, 32, 32), 13, 13),
    ("resnet18", (2, 3, 32, 32), 17, 20),
    ("efficientnet_b0", (2, 3, 16, 16), 49, 81),
    ("vgg11", (2, 3, 32, 32), 8, 8),  # the reference's "VGG-16"
    ("resnet18_shortcut_act", (2, 3, 32, 32), 17, 20),  # the reference's slot placement
])
def test_models_slots_and_shapes(name, shape, num_slots, convs):
    model = build_model(name, num_classes=7)
    assert len(slots(model)) == num_slots
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert model(torch.randn(*shape)).shape == (2, 7)
    # no activation module hides outside a slot
    assert not any(isinstance(m, (nn.ReLU, nn.SiLU)) for m in model.modules())


@pytest.mark.parametrize("name,shape", [("vgg16", (2, 3, 32, 32)), ("resnet18", (2, 3, 32, 32)),
                                        ("vgg11", (2, 3, 32, 32)), ("resnet18_shortcut_act", (2, 3, 32, 32))])
def test_every_slot_is_wired(name, shape):
    """Changing any single slot changes the output (the reference left half of VGG's unwired)."""
    model = build_model(name).eval()
    x = torch.randn(*shape)
    base = model(x)
    for slot in slots(model):
        apply_genome(model, {slot: "symexp"})
        assert not torch.allclose(model(x), base), slot
        apply_genome(model, {slot: "relu"})


def test_resnet_activation_after_addition():
    block = build_model("resnet18").layer2[0]
    x = torch.randn(1, 64, 8, 8)
    apply_genome(block, {"act2": "tanh"})
    out = block(x)
    assert out.abs().max() <= 1.0  # tanh applied to the sum, so nothing escapes it


def test_default_acts_and_registry():
    assert set(get_genome(build_model("efficientnet_b0")).values()) == {"swish"}
    assert set(get_genome(build_model("lenet5", act="gelu")).values()) == {"gelu"}
    with pytest.raises(ValueError, match="unknown model 'vgg19'.*lenet5"):
        build_model("vgg19")

    @register_model("tiny_test_mlp", in_channels=1, image_size=28)
    def tiny(num_classes, in_channels, image_size, act):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 8), ActivationSlot(act),
                             nn.Linear(8, num_classes))
    assert "tiny_test_mlp" in list_models()
    assert build_model("tiny_test_mlp", num_classes=3)(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    # what a model is registered with is what the rest of the package knows of it
    assert model_facts("lenet5").image_size == 28 and model_facts("efficientnet_b0").act == "swish"
    with pytest.raises(ValueError, match="'tiny_test_mlp' was registered without training hyperparameters"):
        _ = SafsConfig(model="tiny_test_mlp", dataset="mnist5k").hparams
    assert SafsConfig(model="tiny_test_mlp", dataset="mnist5k", train_hparams={"optimizer": "adam", "lr": 0.01}).hparams


def test_a_model_registered_by_module_path_is_imported_when_first_built():
    register_model("lenet5_by_path", in_channels=1, image_size=28)("nni_safs.models.lenet:lenet5")
    register_model("misspelt_by_path", in_channels=1, image_size=28)("nni_safs.models.lenet:lenet_five")
    assert SafsConfig(model="misspelt_by_path", dataset="mnist5k", train_hparams={"optimizer": "adam", "lr": 0.01})
    assert type(build_model("lenet5_by_path")).__name__ == "LeNet5"
    with pytest.raises(ValueError, match="'misspelt_by_path' is registered as 'nni_safs.models.lenet:lenet_five', "
                                         "which cannot be imported.*AttributeError"):
        build_model("misspelt_by_path")
