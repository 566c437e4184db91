"""Pruning for SAFS: magnitude pruning through NNI 3.0's pruners, LAMP as an NNI pruner, and masks.

:func:`magnitude_prune` prunes a model in place and returns :data:`Masks` (parameter name ->
0/1 tensor); :class:`MaskHolder` keeps those weights at zero while the model is fine-tuned.
The NNI-backed names are imported when first used: a trial that only fine-tunes a pruned
model needs the masks, not NNI's compression package.
"""
from __future__ import annotations

import importlib
from typing import Any

from nni_safs.pruning.masks import (
    MaskHolder,
    Masks,
    MaskViolationError,
    format_sparsity_report,
    masks_from_model,
    overall_density,
    sparsity_report,
)
from nni_safs.settings.config import SCOPES

_NNI_BACKED = {"LAMPPruner": ".lamp", "lamp_scores": ".lamp", "magnitude_prune": ".magnitude"}

__all__ = ["SCOPES", "Masks", "LAMPPruner", "MaskHolder", "MaskViolationError", "format_sparsity_report",
           "lamp_scores", "magnitude_prune", "masks_from_model", "overall_density", "sparsity_report"]


def __getattr__(name: str) -> Any:  # PEP 562
    if name in _NNI_BACKED:
        return getattr(importlib.import_module(_NNI_BACKED[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
