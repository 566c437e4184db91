"""LAMP (Layer-Adaptive Magnitude-based Pruning, Lee et al., ICLR 2021) as an NNI 3.0 pruner.

LAMP is only a new *metric*: each weight's squared magnitude divided by the squared mass of
the weights of its layer that are no smaller than it. The scores are comparable across
layers, so NNI's existing global allocation (one ``global_group_id``, one threshold) turns
them into the LAMP per-layer sparsities; nothing else of NNI's pruning flow is replaced.
"""
from __future__ import annotations

from typing import Any

import torch
from nni.compression.base.wrapper import ModuleWrapper
from nni.compression.pruning import LevelPruner
from nni.compression.utils import Evaluator

from nni_safs.borrowed import check_level_pruner_step


def lamp_scores(metric: torch.Tensor) -> torch.Tensor:
    """LAMP score of every element of ``metric`` (a weight, or a magnitude/norm of it).

    With the squared values sorted ascending, ``score_i = v_i / sum_{j >= i} v_j``. The
    largest element scores exactly 1 (``x / x``), the highest possible score, so a global
    threshold never removes it and LAMP never empties a layer. An all-zero tensor scores 0.
    """
    squared = metric.detach().flatten().double().square()
    ordered, order = squared.sort()
    suffix = ordered.flip(0).cumsum(0).flip(0)
    ordered_scores = torch.where(suffix > 0, ordered / suffix, 0.0)
    scores = torch.empty_like(ordered_scores).scatter_(0, order, ordered_scores)
    return scores.view_as(metric).to(metric.dtype)


def _has_sparse_ratio(config: dict[str, Any]) -> bool:
    settings = config.get("target_settings", {}).values()
    return "sparse_ratio" in config or any("sparse_ratio" in s for s in settings)


def _mentions_group(config: dict[str, Any]) -> bool:
    settings = config.get("target_settings", {}).values()
    return "global_group_id" in config or any("global_group_id" in s for s in settings)


def _lamp_config_list(config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make each ``sparse_ratio`` entry of ``config_list`` one LAMP group (its ratio = the group total).

    A config list that already names a ``global_group_id`` anywhere is returned unchanged: the
    caller chose the groups, and targets without one are pruned per layer (where LAMP ranks
    exactly like magnitude).
    """
    if any(_mentions_group(c) for c in config_list):
        return config_list
    return [{**c, "global_group_id": f"_lamp{i}"} if _has_sparse_ratio(c) else c
            for i, c in enumerate(config_list)]


class LAMPPruner(LevelPruner):
    """Drop-in replacement for NNI 3.0's ``LevelPruner`` that allocates sparsity by LAMP.

    ``LAMPPruner(model, config_list).compress()`` returns ``(model, masks)`` in NNI's format.
    Each config entry's ``sparse_ratio`` is the *total* ratio over the layers it selects
    (``op_types``/``op_names``/``exclude_op_names``... as in NNI); the per-layer ratios follow
    from LAMP. For block granularities the block L2 norm is scored (``p = 2``).
    """

    p = 2

    def __init__(self, model: torch.nn.Module, config_list: list[dict[str, Any]],
                 evaluator: Evaluator | None = None,
                 existed_wrappers: dict[str, ModuleWrapper] | None = None) -> None:
        check_level_pruner_step()  # the step overridden below is a protected one of NNI's
        super().__init__(model, _lamp_config_list(config_list), evaluator, existed_wrappers)

    def _calculate_metrics(self, data: dict[str, dict[str, torch.Tensor]]
                           ) -> dict[str, dict[str, torch.Tensor]]:
        """LevelPruner's magnitudes turned into LAMP scores, for NNI's unchanged sparsity generation."""
        magnitudes = super()._calculate_metrics(data)
        return {module: {target: lamp_scores(m) for target, m in targets.items()}
                for module, targets in magnitudes.items()}
