from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nni_safs.method.genomes import genome_from_string, genome_to_string
from nni_safs.models import build_model
from nni_safs.models.activations import (
    ActivationSlot,
    apply_genome,
    get_genome,
    load_op_choices,
    op_names,
    set_scales_trainable,
    slots,
    uniform_genome,
)

REPO = Path(__file__).parents[1]

CATALOG = ["relu", "relu6", "hardswish", "swish", "gelu", "elu", "tanh", "softplus", "logsigmoid",
           "symlog", "symexp", "tanhsoft", "acon", "srs"]
REFERENCE_FORMULAS = ["swish_reference", "acon_reference", "tanhsoft_reference", "srs_reference"]
WIDE = torch.cat([torch.linspace(-1e4, 1e4, 2001), torch.tensor([0.0, 1e-30, -1e-30, 88.0, -88.0, 89.0])])


def test_catalog_is_the_papers():
    assert op_names() == CATALOG + REFERENCE_FORMULAS


@pytest.mark.parametrize("op", CATALOG + REFERENCE_FORMULAS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (50.0, 30.0), (-20.0, -40.0), (1e-3, 1e3)])
def test_every_op_finite_on_wide_inputs_after_drift(op, alpha, beta):
    slot = ActivationSlot(op)
    slot.alpha.requires_grad_(True)  # trained, as in stage 2
    slot.beta.requires_grad_(True)
    with torch.no_grad():
        slot.alpha.fill_(alpha)
        slot.beta.fill_(beta)
        for p in slot.op.parameters():  # op parameters drift too
            p.mul_(7.0)
    x = WIDE.clone().requires_grad_(True)
    y = slot(x)
    y.sum().backward()
    assert torch.isfinite(y).all(), op
    assert torch.isfinite(x.grad).all(), op
    for p in slot.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), (op, p)


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(CATALOG),
       x=st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=32),
       alpha=st.floats(-100, 100, width=32), beta=st.floats(-100, 100, width=32),
       raw=st.floats(-30, 30, width=32))
def test_ops_finite_property(op, x, alpha, beta, raw):
    slot = ActivationSlot(op)
    with torch.no_grad():
        slot.alpha.fill_(alpha)
        slot.beta.fill_(beta)
        for p in slot.op.parameters():
            p.fill_(raw)
    inputs = torch.tensor(x, requires_grad=True)
    out = slot(inputs)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(inputs.grad).all()


def test_slot_computes_scaled_op():
    slot = ActivationSlot("tanh")
    with torch.no_grad():
        slot.alpha.fill_(2.0)
        slot.beta.fill_(0.5)
    x = torch.linspace(-3, 3, 13)
    assert torch.allclose(slot(x), 2.0 * torch.tanh(0.5 * x))


def test_formulas_at_init():
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(ActivationSlot("acon")(x), x, atol=1e-6)  # identity at init
    assert torch.allclose(ActivationSlot("symlog")(x), torch.sign(x) * torch.log(x.abs() + 1), atol=1e-6)
    assert torch.allclose(ActivationSlot("symexp")(x), torch.sign(x) * (torch.exp(x.abs()) - 1), atol=1e-5)
    assert torch.allclose(ActivationSlot("srs")(x), x / (x / 2 + torch.exp(-x / 3)), atol=1e-5)
    assert torch.allclose(ActivationSlot("tanhsoft")(x), torch.tanh(x) * torch.nn.functional.softplus(x))


def test_unknown_op_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation op 'reluu'.*relu6.*srs"):
        ActivationSlot("reluu")
    with pytest.raises(ValueError, match="unknown activation op 'nope'.*valid names"):
        apply_genome(build_model("lenet5"), genome_from_string("act1=nope"))
    with pytest.raises(ValueError, match="expected 'slot=op'"):
        genome_from_string("act1")


def test_genome_roundtrip_and_apply():
    model = build_model("lenet5")
    genome = dict(zip(slots(model), ["swish", "srs", "acon", "symexp"]))
    text = genome_to_string(genome)
    assert text == "act1=swish;act2=srs;act3=acon;act4=symexp"
    assert genome_from_string(text) == genome
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    apply_genome(model, genome)
    assert get_genome(model) == genome
    assert not torch.allclose(model(x), before)
    with pytest.raises(ValueError, match="unknown activation slot"):
        apply_genome(model, {"nope": "relu"})
    assert set(uniform_genome(model, "relu").values()) == {"relu"}


def test_scales_freeze_and_train():
    model = build_model("lenet5")
    set_scales_trainable(model, False)
    assert all(not s.alpha.requires_grad and not s.beta.requires_grad for s in slots(model).values())
    set_scales_trainable(model, True)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(s.alpha.grad is not None and s.beta.grad is not None for s in slots(model).values())


def test_catalog_choices_are_data(tmp_path):
    assert "relu" not in load_op_choices()  # the reference excludes relu from the search
    assert set(load_op_choices()) < set(CATALOG)
    own = tmp_path / "ops.yaml"
    own.write_text("choices: [relu, swish, relu]\n")
    assert load_op_choices(own) == ["relu", "swish"]
    own.write_text("choices: [relu, sigmoidd]\n")
    with pytest.raises(ValueError, match="sigmoidd"):
        load_op_choices(own)
    own.write_text("choices: [unclosed\n")
    with pytest.raises(ValueError, match="does not parse"):
        load_op_choices(own)


@pytest.mark.parametrize("op", CATALOG)
def test_frozen_unit_scales_are_skipped_without_changing_a_bit(op):
    torch.manual_seed(0)
    slot = ActivationSlot(op)
    x = torch.randn(64, 6, 8, 8, requires_grad=True)
    assert slot._unit_scales()  # dense training, baseline, stage 1: op(x) itself
    fast = slot(x)
    (grad_fast,) = torch.autograd.grad(fast.sum(), x)
    full = slot.alpha * slot.op(slot.beta * x)  # the formula, multiplications included
    (grad_full,) = torch.autograd.grad(full.sum(), x)
    assert torch.equal(fast, full) and torch.equal(grad_fast, grad_full)


def test_scales_that_are_not_one_or_that_train_are_always_applied():
    slot = ActivationSlot("relu")
    x = torch.tensor([1.0, -1.0, 2.0])
    slot.load_state_dict({**slot.state_dict(), "alpha": torch.tensor(3.0)})  # e.g. a stage-2 checkpoint
    assert torch.equal(slot(x), torch.tensor([3.0, 0.0, 6.0]))
    with torch.no_grad():
        slot.alpha.fill_(1.0)  # edited in place: seen again
    assert torch.equal(slot(x), torch.tensor([1.0, 0.0, 2.0])) and slot._unit_scales()
    set_scales_trainable(slot, True)
    assert not slot._unit_scales()  # stage 2: alpha and beta take part in autograd
    slot(x).sum().backward()
    assert slot.alpha.grad is not None and slot.beta.grad is not None


def test_the_reference_formulas():
    """models/activation.py 118-126, 149-150 of automl/SAFS: swish p1 * x * sigmoid(p2 * x); ACON,
    TanhSoft-1 and SRS (a = b = 1 at init) with only their own parameters; the catalog scales them."""
    x = torch.linspace(-6, 6, 241)
    alpha, beta = torch.tensor(1.7), torch.tensor(0.6)

    def scaled(op):
        slot = ActivationSlot(op)
        with torch.no_grad():
            slot.alpha.fill_(alpha)
            slot.beta.fill_(beta)
        return slot(x)
    assert torch.allclose(scaled("swish_reference"), alpha * x * torch.sigmoid(beta * x))
    assert torch.allclose(scaled("swish"), alpha * beta * x * torch.sigmoid(beta * x))  # ours scales x too
    assert torch.equal(scaled("acon_reference"), x)  # p1 = p2 = p3 = 1: the identity, alpha and beta unused
    assert torch.allclose(scaled("tanhsoft_reference"), torch.tanh(x) * torch.nn.functional.softplus(x))
    assert torch.allclose(scaled("srs_reference"), x / (x + torch.exp(-x)), atol=1e-3)  # a = b = 1 (+1e-3: kept > 0)
    assert torch.allclose(ActivationSlot("srs")(x), x / (x / 2 + torch.exp(-x / 3)), atol=1e-3)  # ours: 2, 3
    reference_choices = load_op_choices(REPO / "search_spaces" / "activations_reference.yaml")
    # optimization_lib.py 25-29: the reference's 13 candidates, in its order
    assert [op.removesuffix("_reference") for op in reference_choices] == [
        "relu6", "hardswish", "swish", "tanhsoft", "acon", "gelu", "srs", "elu", "tanh", "softplus", "logsigmoid",
        "symlog", "symexp"]
    assert set(load_op_choices()) == {op.removesuffix("_reference") for op in reference_choices}
