"""Export the activations SAFS found as a self-contained PyTorch module.

A user who fine-tuned with nni_safs should not need nni_safs to deploy the result: the
generated file imports only torch and rebuilds every slot's ``alpha * op(beta * x)`` with the
learned alpha, beta and op parameters. Its modules keep the parameter names of
:class:`~nni_safs.activations.ActivationSlot` (``alpha``, ``beta``, ``op.<param>``), so a
model with the found activations installed has the same ``state_dict`` keys as the nni_safs
model it came from.

The op code is written from :data:`OP_SOURCES`, one forward body per op of the catalog that
computes exactly what :mod:`nni_safs.activations` computes (same torch calls, same clamps and
softplus parametrisations), so exported activations match the originals bit for bit.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from .activations import EXP_LIMIT, OPS, SRS_MIN_DENOMINATOR, SYMEXP_LIMIT, ActivationSlot, genome_to_string
from .atomic import atomic_write
from .checkpoints import load_checkpoint

# The body of ``forward(self, x)`` of each op; ``self.<name>`` are the op's own parameters,
# named as in the catalog class (the generated __init__ takes them from it).
OP_SOURCES: dict[str, str] = {
    "relu": "return F.relu(x)",
    "relu6": "return F.relu6(x)",
    "hardswish": "return F.hardswish(x)",
    "swish": "return F.silu(x)",
    "gelu": "return F.gelu(x)",
    "elu": "return F.elu(x)",
    "tanh": "return torch.tanh(x)",
    "softplus": "return F.softplus(x)",
    "logsigmoid": "return F.logsigmoid(x)",
    "symlog": "return torch.sign(x) * torch.log1p(x.abs())",
    "symexp": f"return torch.sign(x) * torch.expm1(x.abs().clamp(max={SYMEXP_LIMIT!r}))",
    "tanhsoft": "return torch.tanh(self.a * x) * F.softplus(x)",
    "acon": "dx = (self.p1 - self.p2) * x\n"
            "return dx * torch.sigmoid(self.p3 * dx) + self.p2 * x",
    # a, b are stored through softplus (+1e-3) as in nni_safs.activations._positive
    "srs": "a = F.softplus(self.raw_a) + 1e-3\n"
           "b = F.softplus(self.raw_b) + 1e-3\n"
           f"denominator = x / a + torch.exp((-x / b).clamp(max={EXP_LIMIT!r}))\n"
           f"return x / denominator.clamp(min={SRS_MIN_DENOMINATOR!r})",
}

_FOUND_ACTIVATION = '''
class FoundActivation(nn.Module):
    """One slot's activation: ``alpha * op(beta * x)`` with the learned alpha and beta."""

    def __init__(self, op: nn.Module, alpha: float, beta: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha))
        self.beta = nn.Parameter(torch.tensor(beta))
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.op(self.beta * x)
'''

_INSTALL = '''
def install(model: nn.Module) -> nn.Module:
    """Replace the module at every slot path of ``model`` by its found activation; return ``model``."""
    missing = [path for path in GENOME if not _has_submodule(model, path)]
    if missing:
        raise LookupError(f"model has no module at slot path(s) {missing}; the found activations are for "
                       f"{MODEL!r} with slots {list(GENOME)}")
    reference = next(model.parameters(), None)
    for path, activation in build_activations().items():
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if reference is not None:
            activation = activation.to(reference.device)
        setattr(parent, child, activation)
    return model


def _has_submodule(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True
'''


def rebuild_slots(state: Mapping[str, torch.Tensor], genome: Mapping[str, str]) -> dict[str, ActivationSlot]:
    """Each slot of ``genome`` as an ActivationSlot holding its learned values from ``state``.

    The strict load refuses a state dict whose slot parameters do not fit the genome's ops,
    so a checkpoint and genome that disagree fail here rather than give wrong curves or code.
    """
    rebuilt = {}
    for name, op in genome.items():
        slot = ActivationSlot(op)
        prefix = f"{name}."
        try:
            slot.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})
        except RuntimeError as err:
            raise ValueError(f"the checkpoint's parameters of slot {name!r} do not fit op {op!r}: {err}") from None
        rebuilt[name] = slot
    return rebuilt


def export_activations(checkpoint: str | Path, output: str | Path) -> Path:
    """Write ``output``: a torch-only module rebuilding the found activations of ``checkpoint``.

    ``checkpoint`` is a model saved by a stage after search (``final_safs.pt``,
    ``final_stage1.pt``, ...); its metadata must name the genome. Returns ``output``.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    payload = load_checkpoint(checkpoint)
    meta = payload.get("meta", {})
    genome = meta.get("genome")
    if not genome:
        raise ValueError(f"checkpoint {str(checkpoint)!r} names no activation genome; export a model saved "
                         "after the search (final_safs.pt, final_stage1.pt, final_stage2.pt, baseline_default.pt)")
    source = render_module(rebuild_slots(payload["state"], genome), str(meta.get("model", "unknown model")),
                           _provenance(checkpoint, meta))
    atomic_write(output, lambda handle: handle.write(source.encode()))
    return output


def render_module(slots: Mapping[str, ActivationSlot], model: str, provenance: list[str]) -> str:
    """The generated file's text for ``slots`` of ``model``; ``provenance`` lines go in its docstring."""
    genome = {name: slot.op_name for name, slot in slots.items()}
    unsupported = sorted(set(genome.values()) - set(OP_SOURCES))
    if unsupported:
        raise ValueError(f"cannot export op(s) {unsupported}: nni_safs.export.OP_SOURCES has no source for them")
    used = [op for op in OPS if op in genome.values()]  # catalog order, each class once
    builders = "\n".join(f"        {name!r}: {_slot_call(slot)}," for name, slot in slots.items())
    parts = [
        _docstring(model, provenance),
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
        f"MODEL = {model!r}\nGENOME = {genome!r}",
        *(_op_class(op) for op in used),
        _FOUND_ACTIVATION,
        "\ndef build_activations() -> dict[str, nn.Module]:\n"
        '    """A fresh FoundActivation per slot path, with the learned values."""\n'
        f"    return {{\n{builders}\n    }}\n",
        _INSTALL,
    ]
    return "\n\n".join(part.strip("\n") + "\n" for part in parts)


def _provenance(checkpoint: Path, meta: Mapping[str, Any]) -> list[str]:
    """Where the activations came from, for the generated docstring."""
    lines = [f"workspace: {checkpoint.resolve().parent}", f"checkpoint: {checkpoint.name}"]
    lines += [f"{key}: {meta[key]}" for key in ("dataset", "ratio", "scope", "train_scales", "epochs", "hparams")
              if key in meta]
    return lines + [f"genome: {genome_to_string(meta['genome'])}"]


def _docstring(model: str, provenance: list[str]) -> str:
    details = "\n".join(provenance)
    text = (f"Activation functions found by SAFS (nni_safs) for {model}.\n\n{details}\n\n"
            "Self-contained: needs only PyTorch. Each slot computes alpha * op(beta * x) with the learned\n"
            "values; parameter names match nni_safs' ActivationSlot, so state dicts load across both.\n\n"
            "Usage:\n\n"
            "    model = ...  # the same architecture, with modules at the slot paths in GENOME\n"
            "    install(model)  # swaps in the found activations, in place\n"
            "    activations = build_activations()  # or just the modules, by slot path\n")
    return '"""' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '"""\n'


def _op_class(op: str) -> str:
    """Source of the class for ``op``: the catalog class's parameters and doc, the table's forward."""
    cls = OPS.get(op)
    params = [name for name, _ in cls().named_parameters()]
    doc = (inspect.getdoc(cls) or f"The {op} op.").splitlines()[0].replace("\\", "\\\\")
    lines = [f"class {_class_name(op)}(nn.Module):", f'    """{doc}"""', ""]
    if params:
        lines += [f"    def __init__(self, {', '.join(f'{p}: float' for p in params)}) -> None:",
                  "        super().__init__()",
                  *(f"        self.{p} = nn.Parameter(torch.tensor({p}))" for p in params), ""]
    lines += ["    def forward(self, x: torch.Tensor) -> torch.Tensor:",
              *(f"        {line}" for line in OP_SOURCES[op].splitlines())]
    return "\n" + "\n".join(lines) + "\n"


def _slot_call(slot: ActivationSlot) -> str:
    """``FoundActivation(Op(p=...), alpha=..., beta=...)`` with exact float literals."""
    op_args = ", ".join(f"{name}={_literal(p)}" for name, p in slot.op.named_parameters())
    return (f"FoundActivation({_class_name(slot.op_name)}({op_args}), "
            f"alpha={_literal(slot.alpha)}, beta={_literal(slot.beta)})")


def _literal(value: torch.Tensor) -> str:
    """A scalar as a Python float literal; repr of a float32 value round-trips exactly."""
    number = float(value.item())
    if value.dtype != torch.float32 or not math.isfinite(number):
        raise ValueError(f"cannot export activation parameter {number!r} ({value.dtype}): "
                         "expected a finite float32 value")
    return repr(number)


def _class_name(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_"))
