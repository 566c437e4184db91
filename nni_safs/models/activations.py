"""The SAFS operator catalog and the activation slot ``alpha * op(beta * x)``.

Every place of a model that applies an activation is an :class:`ActivationSlot` with a stable
name; a *genome* maps slot names to op names. In stage 1 the scalars alpha and beta stay at 1
and frozen; in stage 2 they are trained with the weights (:func:`set_scales_trainable`).

Ops are written to stay finite in float32 for inputs far outside a network's usual range
(|x| up to 1e4 and beyond, with alpha/beta drifted): symexp clamps its exponent, srs keeps
its parameters positive and its denominator away from 0, so a poor candidate scores badly
instead of turning a trial into NaN.
"""
from __future__ import annotations

import inspect
import itertools
import math
import re
import textwrap
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nni_safs.method.genomes import Genome
from nni_safs.settings.registry import Registry
from nni_safs.settings.space_files import read_space_file

OPS: Registry[type[nn.Module]] = Registry("activation op")
register_op = OPS.register

SYMEXP_LIMIT = 20.0  # exp(20) ~ 4.9e8: far beyond useful, far below float32 overflow
EXP_LIMIT = 80.0  # largest exponent kept inside exp() anywhere in the catalog
SRS_MIN_DENOMINATOR = 1e-2  # x/a + exp(-x/b) is >= 0.89 at init; never let it reach 0


def _positive(raw: torch.Tensor) -> torch.Tensor:
    """Map an unconstrained parameter to a positive value (inverse of :func:`_raw_positive`)."""
    return F.softplus(raw) + 1e-3


def _raw_positive(value: float) -> torch.Tensor:
    return torch.tensor(math.log(math.expm1(value - 1e-3)))


class _Stateless(nn.Module):
    """An op without parameters of its own: ``fn`` applied elementwise."""

    fn = staticmethod(lambda x: x)
    call = ""  # how a file of found activations names ``fn`` (see _stateless)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _stateless(name: str, call: str) -> type[nn.Module]:
    """Registers ``call`` (``F.relu``, ``torch.tanh`` or a helper of this module, as an exported
    file of found activations names it: :func:`op_sources`) as the op ``name``."""
    owner, _, attribute = call.rpartition(".")
    fn = getattr({"F": F, "torch": torch}[owner], attribute) if owner else globals()[call]
    cls = type(name.capitalize(), (_Stateless,), {"fn": staticmethod(fn), "call": call, "__doc__": f"The {name} op."})
    return register_op(name)(cls)


def _symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def _symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs().clamp(max=SYMEXP_LIMIT))


_stateless("relu", "F.relu")
_stateless("relu6", "F.relu6")
_stateless("hardswish", "F.hardswish")
_stateless("swish", "F.silu")
_stateless("gelu", "F.gelu")
_stateless("elu", "F.elu")
_stateless("tanh", "torch.tanh")
_stateless("softplus", "F.softplus")
_stateless("logsigmoid", "F.logsigmoid")
_stateless("symlog", "_symlog")
_stateless("symexp", "_symexp")


@register_op("tanhsoft")
class TanhSoft(nn.Module):
    """``tanh(a * x) * softplus(x)`` with a trainable ``a`` (init 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a * x) * F.softplus(x)


@register_op("acon")
class AconC(nn.Module):
    """ACON-C (Ma et al. 2021): ``(p1-p2) x sigmoid(p3 (p1-p2) x) + p2 x``; identity at init."""

    def __init__(self) -> None:
        super().__init__()
        self.p1 = nn.Parameter(torch.ones(()))
        self.p2 = nn.Parameter(torch.ones(()))
        self.p3 = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = (self.p1 - self.p2) * x
        return dx * torch.sigmoid(self.p3 * dx) + self.p2 * x


@register_op("srs")
class SoftRootSign(nn.Module):
    """Soft Root Sign (Zhou et al. 2020): ``x / (x/a + exp(-x/b))``, a, b > 0 (init 2, 3).

    a and b are stored through softplus so training cannot make them negative, the exponent
    is clamped, and the denominator is kept >= ``SRS_MIN_DENOMINATOR`` (it can reach 0 once
    b/a > e).
    """

    def __init__(self, a: float = 2.0, b: float = 3.0) -> None:
        super().__init__()
        self.raw_a = nn.Parameter(_raw_positive(a))
        self.raw_b = nn.Parameter(_raw_positive(b))

    @property
    def a(self) -> torch.Tensor:
        return _positive(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        return _positive(self.raw_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        denominator = x / self.a + torch.exp((-x / self.b).clamp(max=EXP_LIMIT))
        return x / denominator.clamp(min=SRS_MIN_DENOMINATOR)


# The reference SAFS's formulas (models/activation.py 100-163): its slot scales p1 (alpha) and p2
# (beta) enter swish as p1 * x * sigmoid(p2 * x), and ACON, TanhSoft and SRS carry only their own
# parameters (SRS from a = b = 1). An op that ``takes_scales`` is called as ``op(x, alpha, beta)``.


class _ReferenceOp(nn.Module):
    """A reference op: called with its slot's scales (``takes_scales``); its own scalar
    parameters are created by name from their initial values."""

    takes_scales = True

    def __init__(self, **initial: float | torch.Tensor) -> None:
        super().__init__()
        for name, value in initial.items():
            self.register_parameter(name, nn.Parameter(torch.as_tensor(value, dtype=torch.get_default_dtype())))


@register_op("swish_reference")
class SwishReference(_ReferenceOp):
    """The reference's swish: ``alpha * x * sigmoid(beta * x)`` (the catalog's scales x too)."""

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return alpha * x * torch.sigmoid(beta * x)


@register_op("acon_reference")
class AconReference(_ReferenceOp):
    """The reference's ACON-C: ``(p1-p2) x sigmoid(p3 (p1-p2) x) + p2 x``, no slot scales."""

    def __init__(self) -> None:
        super().__init__(p1=1.0, p2=1.0, p3=1.0)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        dx = (self.p1 - self.p2) * x
        return dx * torch.sigmoid(self.p3 * dx) + self.p2 * x


@register_op("tanhsoft_reference")
class TanhSoftReference(_ReferenceOp):
    """The reference's TanhSoft-1: ``tanh(a * x) * softplus(x)`` (a init 1), no slot scales."""

    def __init__(self) -> None:
        super().__init__(a=1.0)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a * x) * F.softplus(x)


@register_op("srs_reference")
class SoftRootSignReference(_ReferenceOp):
    """The reference's SRS: ``x / (x/a + exp(-x/b))`` from a = b = 1, no slot scales; a and b kept
    positive and the denominator away from 0 as the catalog's ``srs``."""

    def __init__(self) -> None:
        super().__init__(raw_a=_raw_positive(1.0), raw_b=_raw_positive(1.0))

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        a, b = _positive(self.raw_a), _positive(self.raw_b)
        denominator = x / a + torch.exp((-x / b).clamp(max=EXP_LIMIT))
        return x / denominator.clamp(min=SRS_MIN_DENOMINATOR)


def op_names() -> list[str]:
    """Every op of the catalog, in catalog order."""
    return OPS.names()


# module-level names an op's code may use; a written op brings the ones it names along
_HELPERS = ("SYMEXP_LIMIT", "EXP_LIMIT", "SRS_MIN_DENOMINATOR", "_positive", "_raw_positive", "_symlog", "_symexp", "_ReferenceOp")


def op_sources(names: Iterable[str]) -> str:
    """Python source of the classes of ops ``names``, written from the catalog's own code (so a
    file of found activations computes what the catalog computes), after the helpers they use.

    A stateless op is a class calling its function (torch's, or a helper of this module); any
    other op is its class's source without decorators. A user's op whose class uses names of
    its own module beyond these helpers will not run from this source: the exporter checks.
    """
    classes = []
    for name in names:
        cls = OPS.get(name)
        if issubclass(cls, _Stateless):
            classes.append(f"class {cls.__name__}(nn.Module):\n    \"\"\"{cls.__doc__}\"\"\"\n\n"
                           "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
                           f"        return {cls.call}(x)\n")
        else:
            lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
            classes.append("\n".join(itertools.dropwhile(lambda line: line.startswith("@"), lines)) + "\n")
    constants, functions, pending = [], [], "".join(classes)
    for helper in reversed(_HELPERS):  # a helper only uses those before it
        if re.search(rf"\b{helper}\b", pending):
            value = globals()[helper]
            if isinstance(value, float):
                constants.insert(0, f"{helper} = {value!r}\n")
            else:
                functions.insert(0, inspect.getsource(value))
                pending += functions[0]
    return "\n\n".join(["".join(constants), *functions, *classes] if constants else [*functions, *classes])


class ActivationSlot(nn.Module):
    """One place for an activation: computes ``alpha * op(beta * x)`` (an op that ``takes_scales``,
    one of the reference's formulas, computes ``op(x, alpha, beta)``).

    alpha and beta are per-slot scalars initialised to 1 and frozen: dense training, the
    baseline and stage 1 run ``op(x)`` itself; only stage 2 trains them
    (:func:`set_scales_trainable`). ``op`` can be swapped in place (:meth:`set_op`), which
    gives the new op fresh parameters.
    """

    def __init__(self, op: str = "relu") -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(()), requires_grad=False)
        self.beta = nn.Parameter(torch.ones(()), requires_grad=False)
        self.op_name = ""
        self.op: nn.Module = nn.Identity()
        self.set_op(op)
        self._checked: tuple = ()  # (versions, addresses) of alpha and beta when last compared to 1
        self._unit = False

    def set_op(self, name: str) -> None:
        cls = OPS.get(name)
        device = self.alpha.device
        self.op = cls().to(device)
        self.op_name = name
        self._takes_scales = bool(getattr(cls, "takes_scales", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._takes_scales:  # the reference's formulas: the op applies them itself
            return self.op(x, self.alpha, self.beta)
        if self._unit_scales():
            return self.op(x)
        return self.alpha * self.op(self.beta * x)

    def _unit_scales(self) -> bool:
        """Frozen scales of exactly 1 (dense training, baseline, stage 1): multiplying by them
        changes no bit, forward or backward, yet costs two full-size tensor passes each way
        (on CPU the largest share of a small conv net's step). The comparison with 1 is redone
        only when alpha or beta changed (loaded, moved, edited: their version or storage)."""
        alpha, beta = self.alpha, self.beta
        if alpha.requires_grad or beta.requires_grad:
            return False
        key = (alpha._version, beta._version, alpha.data_ptr(), beta.data_ptr())
        if key != self._checked:
            self._checked, self._unit = key, bool(alpha == 1) and bool(beta == 1)
        return self._unit

    def extra_repr(self) -> str:
        return f"op={self.op_name}"


def slots(model: nn.Module) -> dict[str, ActivationSlot]:
    """The model's activation slots by their stable (module path) names, in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ActivationSlot)}


def get_genome(model: nn.Module) -> Genome:
    """The model's genome: each slot's current op."""
    return {name: slot.op_name for name, slot in slots(model).items()}


def apply_genome(model: nn.Module, genome: Mapping[str, str]) -> None:
    """Set each named slot's op; unknown slots or ops raise ValueError naming the valid ones."""
    model_slots = slots(model)
    unknown = [name for name in genome if name not in model_slots]
    if unknown:
        raise ValueError(f"unknown activation slot(s) {unknown}; this model's slots: {list(model_slots)}")
    for name, op in genome.items():
        OPS.check(op)
    for name, op in genome.items():
        if model_slots[name].op_name != op:
            model_slots[name].set_op(op)


def uniform_genome(model: nn.Module, op: str) -> Genome:
    """Every slot of ``model`` set to ``op`` (e.g. the ReLU baseline)."""
    OPS.check(op)
    return {name: op for name in slots(model)}


def set_scales_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (stage 1) or train (stage 2) every slot's alpha and beta."""
    for slot in slots(model).values():
        slot.alpha.requires_grad_(trainable)
        slot.beta.requires_grad_(trainable)


DEFAULT_CATALOG_FILE = "activations.yaml"


def load_op_choices(path: str | Path | None = None) -> list[str]:
    """The stage-1 op choices from a catalog YAML (``search_spaces/activations.yaml`` default).

    A user restricts or reorders the search without code by editing ``choices`` there (or
    pointing ``path`` at their own copy). Every name must be in the catalog.
    """
    import yaml

    file, data = read_space_file(path, DEFAULT_CATALOG_FILE, "activation catalog", yaml.safe_load, yaml.YAMLError)
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"{str(file)!r} must hold a non-empty list under 'choices'")
    return [OPS.check(str(op)) for op in _unique(choices)]


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))
