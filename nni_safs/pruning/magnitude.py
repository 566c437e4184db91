"""One-shot unstructured magnitude pruning through NNI 3.0's own pruners.

Two NNI 3.0 behaviours shape this module:

* ``unwrap_model()`` restores *unmasked* parameters (as new ``Parameter`` objects, moved to the
  end of the module's parameter order), so we zero the weights ourselves and put the original
  ``Parameter`` objects back, which keeps optimizers and checkpoints built on them valid.
* with a ``global_group_id`` NNI applies ``max_sparse_ratio`` only when the whole group
  saturates; below that one global threshold can empty a layer (plain global magnitude
  pruning of a fresh LeNet-5 at 99% empties conv2 and fc1). We therefore cap layers by
  water-filling: a layer the global threshold over-prunes is fixed at its cap with its own
  per-layer ``sparse_ratio`` and the rest of the budget is re-allocated globally by NNI.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from nni.compression.pruning import LevelPruner
from torch import nn

from nni_safs.borrowed import prunable_op_types
from nni_safs.pruning import SCOPES
from nni_safs.pruning.lamp import LAMPPruner
from nni_safs.pruning.masks import Masks, weight_name, weighted_modules

_GLOBAL_GROUP = "safs_global"


def magnitude_prune(model: nn.Module, ratio: float, scope: str = "layer",
                    op_types: Sequence[str] = ("Conv2d", "Linear"),
                    max_layer_ratio: float | None = None) -> Masks:
    """Prune the weights of every ``op_types`` module of ``model`` in place by magnitude; return the masks.

    ``scope``: ``"layer"`` removes ``ratio`` of every layer (NNI ``LevelPruner``, the paper's
    setting); ``"global"`` removes ``ratio`` of all selected weights under one magnitude
    threshold (``LevelPruner`` with a ``global_group_id``); ``"lamp"`` allocates the same total
    by LAMP scores (:class:`LAMPPruner`). Biases, BatchNorm and other parameters are untouched.
    ``max_layer_ratio`` caps any one layer's ratio for the global scopes; ``None`` keeps at
    least one weight per layer.
    """
    _validate(ratio, scope, op_types, max_layer_ratio)
    modules = weighted_modules(model, op_types)
    if not modules:
        raise ValueError(f"model has no {list(op_types)} module with a weight to prune")
    originals = {name: (dict(m.named_parameters(recurse=False)), "forward" in vars(m))
                 for name, m in modules.items()}
    try:
        if scope == "layer":
            weight_masks = _run(LevelPruner, model, [_config(list(modules), ratio)])
        else:
            sizes = {name: m.weight.numel() for name, m in modules.items()}
            max_pruned = {name: n - 1 if max_layer_ratio is None else int(n * max_layer_ratio)
                          for name, n in sizes.items()}
            pruner_cls = LAMPPruner if scope == "lamp" else LevelPruner
            weight_masks = _capped_global(pruner_cls, model, sizes, ratio, max_pruned)
    finally:
        for name, module in modules.items():
            _restore(module, *originals[name])
    with torch.no_grad():
        for name, module in modules.items():
            module.weight.mul_(weight_masks[name].to(module.weight.device))
    return {weight_name(name): weight_masks[name] for name in modules}


def _validate(ratio: float, scope: str, op_types: Sequence[str], max_layer_ratio: float | None) -> None:
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio!r}")
    if max_layer_ratio is not None and not ratio <= max_layer_ratio <= 1.0:
        raise ValueError(f"max_layer_ratio must be in [ratio, 1] = [{ratio}, 1], got {max_layer_ratio!r}")
    supported = prunable_op_types()
    unsupported = sorted(set(op_types) - supported)
    if unsupported:
        raise ValueError(f"NNI cannot prune op types {unsupported}; "
                         f"supported: {sorted(supported)}")


def _config(names: list[str], sparse_ratio: float, **settings: Any) -> dict[str, Any]:
    """An NNI config entry pruning only the weights (NNI would otherwise mask biases of emptied rows)."""
    return {"op_names": names, "target_names": ["weight"], "sparse_ratio": float(sparse_ratio), **settings}


def _run(pruner_cls: type[LevelPruner], model: nn.Module,
         config_list: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Run one NNI pruner on ``model`` and unwrap it; module name -> bool CPU weight mask."""
    pruner = pruner_cls(model, config_list)
    try:
        _, nni_masks = pruner.compress()
    finally:
        pruner.unwrap_model()
    return {name: targets["weight"].bool().cpu() for name, targets in nni_masks.items()}


def _capped_global(pruner_cls: type[LevelPruner], model: nn.Module, sizes: dict[str, int], ratio: float,
                   max_pruned: dict[str, int]) -> dict[str, torch.Tensor]:
    """NNI's global allocation of ``ratio`` over ``sizes``, no layer pruning more than ``max_pruned``.

    Capping an over-pruned layer only leaves more to prune elsewhere, so layers found over
    their cap stay capped and the loop ends after at most one pass per layer.
    """
    budget = int(sum(sizes.values()) * ratio)
    capped: dict[str, int] = {}
    while True:
        free = [name for name in sizes if name not in capped]
        need = budget - sum(capped.values())
        free_total = sum(sizes[name] for name in free)
        if free and need >= free_total:
            capped.update({name: max_pruned[name] for name in free})
            free = []
        # (k + 0.5) / n survives NNI's int(n * ratio) as exactly k
        config_list = [_config([name], 1.0 if k == sizes[name] else (k + 0.5) / sizes[name])
                       for name, k in capped.items()]
        if free:
            config_list.append(_config(free, (need + 0.5) / free_total, global_group_id=_GLOBAL_GROUP))
        # with no group left every layer has its own ratio, where LAMP ranks exactly like magnitude
        masks = _run(pruner_cls if free else LevelPruner, model, config_list)
        over = {name: max_pruned[name] for name in free
                if sizes[name] - int(masks[name].sum()) > max_pruned[name]}
        if not over:
            return masks
        capped.update(over)


def _restore(module: nn.Module, params: dict[str, nn.Parameter], had_forward: bool) -> None:
    """Undo what NNI's wrap/unwrap leaves: new Parameter objects in a new order, a bound ``forward``."""
    for name in params:
        delattr(module, name)
    for name, param in params.items():
        module.register_parameter(name, param)
    if not had_forward:
        vars(module).pop("forward", None)
