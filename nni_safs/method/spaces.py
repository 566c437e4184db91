"""The search spaces: stage 1 (one categorical per activation slot) and stage 2 (HPO).

Both are data in NNI's search-space format (what its tuners take in ``update_search_space``):
stage 1 has one categorical choice per activation slot. Stage 2's space
lives as data in ``search_spaces/hpo_space.json`` (NNI's nested-choice format: the optimizer
choice carries its own lr / momentum / weight decay / scheduler), so a user can change it
without code; :func:`flatten_hparams` turns a tuner's nested answer into the flat dict
:mod:`nni_safs.training.loop` reads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni_safs.settings.config import OPTIMIZERS, SCHEDULERS
from nni_safs.settings.space_files import read_space_file

DEFAULT_HPO_SPACE = "hpo_space.json"


def slot_space(slot_names: Sequence[str], choices: Sequence[str]) -> dict[str, Any]:
    """Stage 1's space in NNI's search-space format: one categorical choice per slot."""
    return {name: {"_type": "choice", "_value": list(choices)} for name in slot_names}


def load_hpo_space(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check a stage-2 space; a file that does not parse is reported with its path."""
    file, space = read_space_file(path, DEFAULT_HPO_SPACE, "hpo_space", json.loads, json.JSONDecodeError)
    optimizer = space.get("optimizer") if isinstance(space, dict) else None
    if not isinstance(optimizer, dict) or optimizer.get("_type") != "choice":
        raise ValueError(f"hpo_space file {str(file)!r} must define 'optimizer' as a choice")
    for branch in optimizer.get("_value", []):
        name = branch.get("_name") if isinstance(branch, dict) else branch
        if name not in OPTIMIZERS:
            raise ValueError(f"hpo_space {str(file)!r}: unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
        scheduler = branch.get("scheduler", {}) if isinstance(branch, dict) else {}
        for value in scheduler.get("_value", []) if isinstance(scheduler, dict) else [scheduler]:
            if value not in SCHEDULERS:
                raise ValueError(f"hpo_space {str(file)!r}: unknown scheduler {value!r}; "
                                 f"valid: {', '.join(SCHEDULERS)}")
    return space


def nest_hparams(flat: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any] | None:
    """The point of the nested ``space`` that ``flatten_hparams`` turns into ``flat``, or None.

    Keys the chosen optimizer's branch does not tune are dropped (they take their defaults);
    a value outside the branch's choices or ranges makes the point unrepresentable (None).
    """
    optimizer = space.get("optimizer", {})
    branch = next((b for b in optimizer.get("_value", []) if isinstance(b, dict)
                   and b.get("_name") == flat.get("optimizer")), None)
    if branch is None:
        return None
    point: dict[str, Any] = {"_name": branch["_name"]}
    for key, spec in branch.items():
        if key == "_name":
            continue
        value = flat.get(key, "constant" if key == "scheduler" else None)
        kind, bounds = spec.get("_type"), spec.get("_value", [])
        if value is None or (kind == "choice" and value not in bounds) or \
                (kind != "choice" and not (bounds[0] <= value <= bounds[1])):
            return None
        point[key] = value
    return {"optimizer": point}


def flatten_hparams(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optimizer": {"_name": "sgd", "lr": ...}, ...}`` -> ``{"optimizer": "sgd", "lr": ...}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and "_name" in value:
            flat[key] = value["_name"]
            flat.update(flatten_hparams({k: v for k, v in value.items() if k != "_name"}))
        else:
            flat[key] = value
    return flat
