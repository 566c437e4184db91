"""Pruning for SAFS: magnitude pruning through NNI 3.0's pruners, LAMP as an NNI pruner, and masks.

:func:`magnitude_prune` prunes a model in place and returns :data:`Masks` (parameter name ->
0/1 tensor); :class:`MaskHolder` keeps those weights at zero while the model is fine-tuned.
"""
from .lamp import LAMPPruner, lamp_scores
from .magnitude import SCOPES, magnitude_prune
from .masks import (Masks, MaskHolder, MaskViolationError, format_sparsity_report, masks_from_model,
                    overall_density, sparsity_report)

__all__ = ["SCOPES", "Masks", "LAMPPruner", "MaskHolder", "MaskViolationError", "format_sparsity_report",
           "lamp_scores", "magnitude_prune", "masks_from_model", "overall_density", "sparsity_report"]
