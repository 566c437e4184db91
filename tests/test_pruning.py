"""Pruning through NNI 3.0: magnitude scopes, LAMP as an NNI pruner, masks held through fine-tuning."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from nni.compression.pruning import LevelPruner

from nni_safs.models.lenet import LeNet5
from nni_safs.pruning import (
    SCOPES,
    LAMPPruner,
    MaskHolder,
    MaskViolationError,
    format_sparsity_report,
    lamp_scores,
    magnitude_prune,
    masks_from_model,
    overall_density,
    sparsity_report,
)

WEIGHTS = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
LAYERS = [name.removesuffix(".weight") for name in WEIGHTS]


def lenet(seed: int = 0) -> LeNet5:
    torch.manual_seed(seed)
    return LeNet5(num_classes=10)


@pytest.fixture(scope="module")
def pruned() -> dict[str, tuple[LeNet5, dict, dict]]:
    """Each scope at 99%: (pruned model, masks, the dense parameters before pruning)."""
    result = {}
    for scope in SCOPES:
        model = lenet()
        dense = {name: p.detach().clone() for name, p in model.named_parameters()}
        result[scope] = (model, magnitude_prune(model, 0.99, scope), dense)
    return result


def kept(masks: dict) -> dict[str, int]:
    return {name: int(mask.count_nonzero()) for name, mask in masks.items()}


@pytest.mark.parametrize("scope", SCOPES)
def test_prune_reaches_ratio_on_weights_only(pruned, scope):
    model, masks, dense = pruned[scope]
    assert sorted(masks) == sorted(WEIGHTS)  # no bias, no activation alpha/beta
    assert abs(overall_density(masks) - 0.01) <= 0.0005
    params = dict(model.named_parameters())
    for name, before in dense.items():
        if name in masks:
            mask = masks[name]
            assert mask.dtype == torch.bool and mask.device.type == "cpu"
            assert torch.all(params[name][~mask] == 0)
            assert torch.equal(params[name][mask], before[mask])
        else:
            assert torch.equal(params[name], before), name


def test_layer_scope_is_uniform(pruned):
    _, masks, _ = pruned["layer"]
    for name, mask in masks.items():
        assert abs(kept(masks)[name] / mask.numel() - 0.01) <= 1 / mask.numel() + 1e-3, name


@pytest.mark.parametrize("scope", ["global", "lamp"])
def test_global_scopes_never_empty_a_layer(pruned, scope):
    _, masks, _ = pruned[scope]
    assert min(kept(masks).values()) >= 1
    # the allocation is not uniform: these scopes really rank across layers
    assert kept(masks)["conv1.weight"] / 150 > 0.1


def test_lamp_allocates_differently_from_global(pruned):
    assert kept(pruned["lamp"][1]) != kept(pruned["global"][1])
    # LAMP's defining trait: the big layer fc1 keeps far more than under one magnitude threshold
    assert kept(pruned["lamp"][1])["fc1.weight"] > 10 * kept(pruned["global"][1])["fc1.weight"]


def test_max_layer_ratio_caps_global():
    model = lenet()
    masks = magnitude_prune(model, 0.9, "global", max_layer_ratio=0.95)
    for name, mask in masks.items():
        assert 1 - kept(masks)[name] / mask.numel() <= 0.95 + 1e-9, name
    assert abs(overall_density(masks) - 0.1) <= 0.0005


def test_prune_keeps_parameter_objects_and_order():
    model = lenet()
    before = list(model.named_parameters())
    magnitude_prune(model, 0.5, "lamp")
    after = list(model.named_parameters())
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(p is q for (_, p), (_, q) in zip(before, after))
    assert not hasattr(model.conv1, "_nni_wrapper") and "forward" not in vars(model.conv1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=0.0), "ratio"), (dict(ratio=1.0), "ratio"), (dict(ratio=-0.5), "ratio"),
    (dict(ratio=float("nan")), "ratio"), (dict(ratio=0.5, scope="random"), "layer, global, lamp"),
    (dict(ratio=0.5, scope="global", max_layer_ratio=0.4), "max_layer_ratio"),
    (dict(ratio=0.5, op_types=("ActivationSlot",)), "ActivationSlot"),
])
def test_bad_arguments(kwargs, match):
    model = lenet()
    dense = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        magnitude_prune(model, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), dense))


# --- fine-tuning with MaskHolder ---------------------------------------------------------------

def train_steps(model: LeNet5, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2),
}


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_mask_holder_keeps_pruned_weights_zero(opt):
    model = lenet()
    masks = magnitude_prune(model, 0.9, "layer")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = OPTIMIZERS[opt](model.parameters())
    holder = MaskHolder(model, masks).attach(optimizer)
    train_steps(model, optimizer)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert not torch.equal(params[name][mask], before[name][mask]), name
        state = optimizer.state[params[name]]
        moment = state["momentum_buffer"] if opt == "sgd" else state["exp_avg"]
        assert torch.all(moment[~mask] == 0), name  # no state builds up where weights are pruned
    assert holder.violations() == {}
    holder.check()


def test_without_mask_holder_pruned_weights_revive():
    model = lenet()
    masks = magnitude_prune(model, 0.9, "layer")
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    train_steps(model, optimizer, steps=2)
    holder = MaskHolder(model, masks)
    assert set(holder.violations()) == set(WEIGHTS)
    with pytest.raises(MaskViolationError):
        holder.check()


def test_detach_removes_hooks():
    model = lenet()
    masks = magnitude_prune(model, 0.9, "layer")
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    holder = MaskHolder(model, masks).attach(optimizer)
    train_steps(model, optimizer, steps=1)
    holder.detach()
    train_steps(model, optimizer, steps=1)
    assert holder.violations()


def test_check_names_revived_weight():
    model = lenet()
    masks = magnitude_prune(model, 0.9, "global")
    holder = MaskHolder(model, masks)
    holder.check()
    pruned_index = (~masks["fc2.weight"]).nonzero()[:3]
    with torch.no_grad():
        model.fc2.weight[pruned_index[:, 0], pruned_index[:, 1]] = 0.5
    assert holder.violations() == {"fc2.weight": 3}
    with pytest.raises(MaskViolationError, match=r"fc2\.weight: 3"):
        holder.check()
    holder.apply()
    holder.check()


def test_mask_holder_rejects_mismatched_masks():
    model = lenet()
    with pytest.raises(ValueError, match="nope"):
        MaskHolder(model, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        MaskHolder(model, {"fc1.weight": torch.ones(3, dtype=torch.bool)})


# --- masks as data ----------------------------------------------------------------------------

def test_masks_roundtrip_through_checkpoint():
    model = lenet()
    masks = magnitude_prune(model, 0.8, "lamp")
    buffer = io.BytesIO()
    torch.save({"state": model.state_dict(), "masks": masks}, buffer)
    buffer.seek(0)
    payload = torch.load(buffer)
    restored = lenet(seed=1)
    restored.load_state_dict(payload["state"])
    recovered = masks_from_model(restored)
    assert sorted(recovered) == sorted(masks)
    for name, mask in masks.items():
        assert torch.equal(recovered[name], mask)
        assert torch.equal(payload["masks"][name], mask)


def test_sparsity_report_numbers():
    model = lenet()
    params = dict(model.named_parameters())
    masks = {name: torch.zeros_like(params[name], dtype=torch.bool) for name in WEIGHTS}
    masks["conv1.weight"].view(-1)[:3] = True
    masks["fc3.weight"][0] = True
    rows = sparsity_report(model, masks)
    assert [r["name"] for r in rows] == WEIGHTS
    conv1, fc3 = rows[0], rows[-1]
    assert conv1 == {"name": "conv1.weight", "shape": (6, 1, 5, 5), "total": 150, "kept": 3, "density": 0.02}
    assert (fc3["total"], fc3["kept"]) == (840, 84) and fc3["density"] == pytest.approx(0.1)
    assert overall_density(masks) == pytest.approx(87 / 44190)  # 150 + 2400 + 256 x 120 + 120 x 84 + 840 weights
    table = format_sparsity_report(rows)
    assert "conv1.weight" in table and "6x1x5x5" in table and "2.00%" in table
    assert table.splitlines()[-1].split()[:3] == ["total", "87", "44190"]


# --- LAMP -------------------------------------------------------------------------------------

def test_lamp_scores_hand_worked():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    # squares ascending 0.25, 1, 4, 9; suffix sums 14.25, 14, 13, 9
    expected = torch.tensor([[1 / 14, 4 / 13], [1.0, 0.25 / 14.25]])
    scores = lamp_scores(w)
    assert scores.shape == w.shape and scores.dtype == w.dtype
    assert torch.allclose(scores, expected)
    assert scores[1, 0] == 1.0  # the largest weight scores exactly 1
    assert torch.equal(lamp_scores(torch.zeros(4)), torch.zeros(4))


def weight_sparsity(nni_masks: dict) -> float:
    total = sum(m["weight"].numel() for m in nni_masks.values())
    return 1 - sum(float(m["weight"].sum()) for m in nni_masks.values()) / total


def test_lamp_pruner_in_level_pruner_place():
    config_list = [{"op_types": ["Linear", "Conv2d"], "sparse_ratio": 0.9}]
    model = lenet()
    pruner = LAMPPruner(model, config_list)
    returned, nni_masks = pruner.compress()
    assert returned is model
    assert sorted(nni_masks) == sorted(LAYERS)
    for name, targets in nni_masks.items():
        weight = targets["weight"]
        assert weight.shape == getattr(model, name).weight.shape and weight.dtype == torch.float32
        assert set(weight.unique().tolist()) <= {0.0, 1.0}
    assert weight_sparsity(nni_masks) == pytest.approx(0.9, abs=1e-3)
    pruner.unwrap_model()

    level_model = lenet()
    level = LevelPruner(level_model, config_list)
    _, level_masks = level.compress()
    level.unwrap_model()
    # LevelPruner prunes 90% of each layer; LAMP allocates the same total unevenly
    densities = {n: float(m["weight"].mean()) for n, m in nni_masks.items()}
    assert max(densities.values()) - min(densities.values()) > 0.05
    assert weight_sparsity(level_masks) == pytest.approx(0.9, abs=2e-3)


def test_lamp_pruner_honours_op_names():
    model = lenet()
    dense = {name: p.detach().clone() for name, p in model.named_parameters()}
    pruner = LAMPPruner(model, [{"op_names": ["fc1", "fc2"], "sparse_ratio": 0.9}])
    _, nni_masks = pruner.compress()
    pruner.unwrap_model()
    assert sorted(nni_masks) == ["fc1", "fc2"]
    assert weight_sparsity(nni_masks) == pytest.approx(0.9, abs=1e-3)
    assert torch.equal(model.conv1.weight, dense["conv1.weight"])


def test_lamp_pruner_keeps_user_groups():
    # a config that already names groups is used as given: here two independent LAMP groups
    model = lenet()
    pruner = LAMPPruner(model, [
        {"op_names": ["conv1", "conv2"], "sparse_ratio": 0.5, "global_group_id": "a"},
        {"op_names": ["fc1", "fc2", "fc3"], "sparse_ratio": 0.95, "global_group_id": "b"},
    ])
    _, nni_masks = pruner.compress()
    pruner.unwrap_model()
    convs = {n: m for n, m in nni_masks.items() if n.startswith("conv")}
    fcs = {n: m for n, m in nni_masks.items() if n.startswith("fc")}
    assert weight_sparsity(convs) == pytest.approx(0.5, abs=1e-3)
    assert weight_sparsity(fcs) == pytest.approx(0.95, abs=1e-3)
