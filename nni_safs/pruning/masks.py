"""Our mask form (parameter name -> 0/1 tensor) and keeping it true through fine-tuning.

NNI 3.0 applies masks inside its wrappers only; once a model is unwrapped nothing stops an
optimizer from reviving pruned weights (gradients, weight decay, momentum, Adam moments all
move them). :class:`MaskHolder` closes that gap for plain PyTorch training loops.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

Masks = dict[str, torch.Tensor]


class MaskViolationError(RuntimeError):
    """A pruned weight is no longer exactly zero."""


def _masked_params(model: nn.Module, masks: Masks) -> dict[str, nn.Parameter]:
    """The model's parameters that ``masks`` covers, in model order; a mask must match its parameter."""
    params = {name: p for name, p in model.named_parameters() if name in masks}
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"masks name parameters the model does not have: {unknown}")
    for name, param in params.items():
        if masks[name].shape != param.shape:
            raise ValueError(f"mask for {name} has shape {tuple(masks[name].shape)}, "
                             f"parameter has {tuple(param.shape)}")
    return params


class MaskHolder:
    """Keeps every pruned weight of ``model`` exactly zero while it is fine-tuned.

    ``attach(optimizer)`` zeroes masked gradients as they are computed, so optimizer state
    (momentum, Adam moments) never builds up at pruned positions, and re-applies the masks
    after every ``optimizer.step()``, so nothing (weight decay, numerical noise) can leave
    a pruned weight non-zero.
    """

    def __init__(self, model: nn.Module, masks: Masks) -> None:
        self._params = _masked_params(model, masks)
        self._masks = {name: masks[name].to(device=p.device, dtype=p.dtype)
                       for name, p in self._params.items()}
        self._handles: list[RemovableHandle] = []
        self._grad_hooks: list[RemovableHandle] = []

    def _mask(self, name: str) -> torch.Tensor:
        """The mask on its parameter's current device (the model may have moved since)."""
        mask = self._masks[name].to(self._params[name].device)
        self._masks[name] = mask
        return mask

    def apply(self) -> None:
        """Zero every pruned weight in place."""
        with torch.no_grad():
            for name, param in self._params.items():
                param.mul_(self._mask(name))

    def attach(self, optimizer: torch.optim.Optimizer) -> MaskHolder:
        """Apply the masks now and after every step of ``optimizer``; zero masked gradients."""
        self.apply()
        if not self._grad_hooks:
            self._grad_hooks = [param.register_hook(lambda grad, name=name: grad * self._mask(name))
                                for name, param in self._params.items()]
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        return self

    def detach(self) -> None:
        """Remove every hook ``attach`` registered."""
        for handle in self._handles + self._grad_hooks:
            handle.remove()
        self._handles, self._grad_hooks = [], []

    def violations(self) -> dict[str, int]:
        """Parameter name -> number of pruned positions that are not exactly zero (only offenders)."""
        counts = {name: int(((self._mask(name) == 0) & (param.detach() != 0)).sum())
                  for name, param in self._params.items()}
        return {name: count for name, count in counts.items() if count}

    def check(self) -> None:
        """Raise :class:`MaskViolationError` if any pruned weight was revived."""
        bad = self.violations()
        if bad:
            detail = ", ".join(f"{name}: {count}" for name, count in bad.items())
            raise MaskViolationError(f"pruned weights are no longer zero ({detail})")


def masks_from_model(model: nn.Module, op_types: Sequence[str] = ("Conv2d", "Linear")) -> Masks:
    """Recover masks from the exact zeros of a pruned model's weights (e.g. a zeroed checkpoint)."""
    return {weight_name(name): (module.weight.detach() != 0).cpu()
            for name, module in weighted_modules(model, op_types).items()}


def weighted_modules(model: nn.Module, op_types: Sequence[str]) -> dict[str, nn.Module]:
    """Modules whose class name is in ``op_types`` (NNI's matching) and that have a weight Parameter."""
    return {name: module for name, module in model.named_modules()
            if type(module).__name__ in op_types
            and isinstance(getattr(module, "weight", None), nn.Parameter)}


def weight_name(module_name: str) -> str:
    """The parameter name of a module's weight, as ``model.named_parameters()`` spells it."""
    return f"{module_name}.weight" if module_name else "weight"


def sparsity_report(model: nn.Module, masks: Masks) -> list[dict]:
    """One row per masked parameter, in model order: name, shape, total, kept, density."""
    rows = []
    for name, param in _masked_params(model, masks).items():
        total = param.numel()
        kept = int(masks[name].count_nonzero())
        rows.append({"name": name, "shape": tuple(param.shape), "total": total, "kept": kept,
                     "density": kept / total})
    return rows


def overall_density(masks: Masks) -> float:
    """Kept / total over all masked parameters."""
    total = sum(mask.numel() for mask in masks.values())
    if not total:
        raise ValueError("overall_density of empty masks")
    return sum(int(mask.count_nonzero()) for mask in masks.values()) / total


def format_sparsity_report(rows: list[dict]) -> str:
    """A plain-text table of :func:`sparsity_report` rows with a total line."""
    table = [("layer", "shape", "kept", "total", "density")]
    table += [(r["name"], "x".join(map(str, r["shape"])), str(r["kept"]), str(r["total"]),
               f"{r['density']:.2%}") for r in rows]
    kept, total = sum(r["kept"] for r in rows), sum(r["total"] for r in rows)
    table.append(("total", "", str(kept), str(total), f"{kept / total:.2%}" if total else "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)  # text left, numbers right
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
