"""What a run found, for use without nni_safs: the activations as a source file, the network as
a ``torch.export`` program. Each is written only after it was loaded back and reproduced the original
bit for bit.

``safs export CHECKPOINT`` (:func:`export_activations`) writes a torch-only module rebuilding
every slot's ``alpha * op(beta * x)`` with the learned alpha, beta and op parameters. Its op
classes are written from the catalog's own code (:func:`nni_safs.models.activations.op_sources`),
and its modules keep :class:`~nni_safs.models.activations.ActivationSlot`'s parameter names, so
a model with the found activations installed has the state-dict keys of the model it came from.

``safs export WORKSPACE --model`` (:func:`export_model`) writes the pruned network of one variant
(``safs`` by default) as a ``torch.export`` program, loadable with
``torch.export.load(path).module()`` and no model source code:

* Every slot is written as plain tensor code (every op of the catalog is), so the program
  records the activations exactly as they ran; biases, BN statistics, alpha, beta and op
  parameters are its parameters and buffers.
* The pruned weights (the tensors the checkpoint's masks cover) are stored sparse: their
  nonzero values and int32 positions in one flat index space. The program rebuilds them dense
  at each call (one scatter into zeros), so inference runs PyTorch's ordinary dense kernels
  and gives the same logits.
"""
from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from nni_safs.method.genomes import genome_to_string
from nni_safs.models.activations import OPS, ActivationSlot, op_sources
from nni_safs.storage.atomic import atomic_write
from nni_safs.storage.checkpoints import load_checkpoint
from nni_safs.storage.workspace import model_checkpoint
from nni_safs.training.jobs import load_kept_model

# ---------------------------------------------------------------- the found activations

_FOUND_ACTIVATION = '''
class FoundActivation(nn.Module):
    """One slot's activation: ``alpha * op(beta * x)`` with the learned alpha and beta."""

    def __init__(self, op: nn.Module, alpha: float, beta: float, **op_params: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha))
        self.beta = nn.Parameter(torch.tensor(beta))
        self.op = op
        self.takes_scales = getattr(op, "takes_scales", False)  # the reference SAFS's formulas apply alpha, beta
        with torch.no_grad():
            for name, value in op_params.items():
                op.get_parameter(name).fill_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_scales:
            return self.op(x, self.alpha, self.beta)
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
    """The generated file's text for ``slots`` of ``model``; ``provenance`` lines go in its docstring.

    Raises:
        ValueError: an op is not in the catalog, or its written class does not reproduce it.
    """
    genome = {name: slot.op_name for name, slot in slots.items()}
    unknown = sorted(set(genome.values()) - set(OPS.names()))
    if unknown:
        raise ValueError(f"cannot export op(s) {unknown}: not in the activation catalog")
    used = [op for op in OPS.names() if op in genome.values()]  # catalog order, each class once
    builders = "\n".join(f"        {name!r}: {_slot_call(slot)}," for name, slot in slots.items())
    parts = [
        _docstring(model, provenance),
        "import math\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
        f"MODEL = {model!r}\nGENOME = {genome!r}",
        op_sources(used),
        _FOUND_ACTIVATION,
        "\ndef build_activations() -> dict[str, nn.Module]:\n"
        '    """A fresh FoundActivation per slot path, with the learned values."""\n'
        f"    return {{\n{builders}\n    }}\n",
        _INSTALL,
    ]
    source = "\n\n".join(part.strip("\n") + "\n" for part in parts)
    _check_reproduces(source, slots)
    return source


def _check_reproduces(source: str, slots: Mapping[str, ActivationSlot]) -> None:
    """Refuse a source whose activations do not compute the slots' values exactly (e.g. a user's
    op class that uses names of its own module)."""
    # wide enough to reach every op's clamps and saturations (symexp's limit, softplus's threshold)
    probe = torch.cat([torch.linspace(-1e4, 1e4, 20001), torch.tensor([0.0, 1e-30, -1e-30, 88.0, -88.0, 89.0])])
    namespace: dict[str, Any] = {"__name__": "nni_safs_export_check"}
    try:
        exec(compile(source, "<found activations>", "exec"), namespace)  # our own generated code
        with torch.no_grad():
            for name, activation in namespace["build_activations"]().items():
                slot = slots[name]
                x = probe.to(slot.alpha.device)
                if not torch.equal(activation.to(x.device)(x), slot(x)):
                    raise ValueError(f"the written activation of slot {name!r} ({slot.op_name}) does not "
                                     "reproduce it")
    except NameError as err:
        raise ValueError(f"the written activations do not run ({type(err).__name__}: {err}); an op's class "
                         "must use only torch and the catalog's helpers") from None


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


def _slot_call(slot: ActivationSlot) -> str:
    """``FoundActivation(Op(), alpha=..., beta=..., <op param>=...)`` with exact float literals."""
    op_args = "".join(f", {name}={_literal(p)}" for name, p in slot.op.named_parameters())
    return f"FoundActivation({type(slot.op).__name__}(), alpha={_literal(slot.alpha)}, beta={_literal(slot.beta)}{op_args})"


def _literal(value: torch.Tensor) -> str:
    """A scalar as a Python float literal; repr of a float32 value round-trips exactly."""
    number = float(value.item())
    if value.dtype != torch.float32 or not math.isfinite(number):
        raise ValueError(f"cannot export activation parameter {number!r} ({value.dtype}): "
                         "expected a finite float32 value")
    return repr(number)


# ---------------------------------------------------------------- the pruned network

METADATA_FILE = "safs.json"  # provenance inside the archive: torch.export.load(path, extra_files={METADATA_FILE: ""})
CHECK_IMAGES = 16  # test images the written file must reproduce exactly before it is kept


class _Scaled(nn.Module):
    """A slot as plain tensor code, ``alpha * op(beta * x)`` always (or ``op(x, alpha, beta)`` for an op
    that applies the scales itself): ActivationSlot's skip of unit scales compares parameter values,
    which an export cannot trace (times 1 changes no bit)."""

    def __init__(self, slot: ActivationSlot) -> None:
        super().__init__()
        self.alpha, self.beta, self.op = slot.alpha, slot.beta, slot.op
        self.takes_scales = getattr(slot.op, "takes_scales", False)  # the reference's formulas apply them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_scales:
            return self.op(x, self.alpha, self.beta)
        return self.alpha * self.op(self.beta * x)


class _SparseWeights(nn.Module):
    """``model`` whose pruned weights ``names`` are kept as nonzero values + int32 positions and
    rebuilt dense at each call, so the program stores only the kept weights yet runs PyTorch's
    dense kernels."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        params = dict(model.named_parameters())
        flat = torch.cat([params[name].detach().reshape(-1) for name in names])
        positions = flat.nonzero().reshape(-1)
        index_dtype = torch.int32 if flat.numel() <= torch.iinfo(torch.int32).max else torch.int64
        self.register_buffer("indices", positions.to(index_dtype))
        self.register_buffer("values", flat[positions].clone())
        self.names, self.total = names, flat.numel()
        self.shapes = [tuple(params[name].shape) for name in names]
        for name in names:  # the dense copies must not end up in the program, hence in the file
            path, _, leaf = name.rpartition(".")
            delattr(model.get_submodule(path), leaf)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = torch.zeros(self.total, dtype=self.values.dtype, device=self.values.device)
        dense = dense.index_put((self.indices.long(),), self.values)
        weights, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            numel = math.prod(shape)
            weights[name] = dense[start:start + numel].view(shape)
            start += numel
        return torch.func.functional_call(self.model, weights, (x,), strict=False)


def export_model(workspace: str | Path, output: str | Path, variant: str = "safs") -> Path:
    """Write ``output``: the ``variant`` model of ``workspace`` as a torch-only ``torch.export`` program.

    ``variant`` is one of :data:`~nni_safs.storage.workspace.MODEL_CHECKPOINTS` that the workspace
    holds. Returns ``output``.
    """
    output = Path(output)
    model, payload, splits = load_kept_model(workspace, variant)
    images = torch.stack([splits.test[i][0] for i in range(min(CHECK_IMAGES, len(splits.test)))])
    meta = {**payload["meta"], "variant": variant, "checkpoint": model_checkpoint(workspace, variant).name,
            "input_shape": list(images.shape[1:]), "num_classes": splits.num_classes}
    data = to_exported_program(model, payload["masks"], images, meta)
    atomic_write(output, lambda handle: handle.write(data))
    return output


def to_exported_program(model: nn.Module, masks: Mapping[str, torch.Tensor], example: torch.Tensor,
                        meta: Mapping[str, Any]) -> bytes:
    """The bytes of the ``torch.export`` file for ``model`` (eval mode) with ``masks``' tensors sparse.

    Any batch size runs; ``example`` is a batch of real inputs. Refuses a model whose weights are
    nonzero where its mask is 0 (not the pruned model), and a program that does not reproduce
    ``model``'s logits on ``example`` exactly once loaded back.
    """
    model = copy.deepcopy(model).requires_grad_(False).eval()  # the dense weights are stripped from this copy
    params = dict(model.named_parameters())
    names = list(masks)
    revived = {name: int(params[name][masks[name] == 0].count_nonzero()) for name in names}
    revived = {name: count for name, count in revived.items() if count}
    if revived:
        raise ValueError(f"weights that the masks prune are nonzero (parameter: count) {revived}: not a pruned model")
    with torch.no_grad():
        expected = model(example)
        for name, slot in list(model.named_modules()):
            if isinstance(slot, ActivationSlot):
                parent, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(parent), leaf, _Scaled(slot))
        program = torch.export.export(_SparseWeights(model, names).eval(), (example,),
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
        program.example_inputs = None  # the check images are not the user's business
        for node in program.graph.nodes:
            node.meta.pop("stack_trace", None)  # paths of this machine's sources, of no use to a user
        buffer = io.BytesIO()
        meta = {**meta, "sparse_weights": names}  # the order of the weights in the values/indices buffers
        torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)})
        got = torch.export.load(io.BytesIO(buffer.getvalue())).module()(example)
    if not torch.equal(got, expected):
        raise RuntimeError(f"the exported model's logits differ from the workspace model's (max |diff| "
                           f"{float((got - expected).abs().max()):.3g}); refusing to write it")
    return buffer.getvalue()
