"""``--set key=value``: run a config with a few keys changed, without editing the file.

A value is read as YAML, as it would be in the file (``dense_epochs=1`` is an int,
``dataset_options={num_classes: 10}`` a mapping, ``data_root=null`` None). A key is a classArg
(a :class:`~nni_safs.settings.config.SafsConfig` field) or, for ``safs experiment`` on an NNI experiment
YAML, one of the experiment fields in :data:`EXPERIMENT_FIELDS`. Unknown keys and bad
experiment fields are refused here; classArg values are validated with the whole config.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import yaml

from nni_safs.settings.config import SafsConfig

# NNI experiment fields an override may change: a run's parallelism and its limits.
EXPERIMENT_FIELDS = ("trialConcurrency", "maxTrialNumber", "maxExperimentDuration")
CLASS_ARGS = tuple(f.name for f in dataclasses.fields(SafsConfig))


def parse_overrides(pairs: Sequence[str], experiment_fields: Sequence[str] = ()) -> dict[str, Any]:
    """``["key=value", ...]`` as a dict; a key must be a classArg or one of ``experiment_fields``."""
    valid = (*CLASS_ARGS, *experiment_fields)
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in valid:
            raise ValueError(f"unknown --set key {key!r}; valid keys: {', '.join(sorted(valid, key=str.lower))}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {key}: value {text!r} does not parse as YAML ({err})") from None
        if key in EXPERIMENT_FIELDS:
            _check_experiment_field(key, value)
        overrides[key] = value
    return overrides


def apply_overrides(data: Mapping[str, Any], pairs: Sequence[str], experiment: bool = False) -> dict[str, Any]:
    """A copy of a config file's content with ``pairs`` applied.

    ``data`` is an NNI experiment YAML (classArgs go to ``tuner.classArgs``; with ``experiment``
    the :data:`EXPERIMENT_FIELDS` go to the top level) or a plain YAML of classArgs.
    """
    is_experiment = "tuner" in data
    overrides = parse_overrides(pairs, EXPERIMENT_FIELDS if experiment and is_experiment else ())
    result = dict(data)
    if not is_experiment:
        result.update(overrides)
        return result
    tuner = dict(result.get("tuner") or {})
    class_args = dict(tuner.get("classArgs") or {})
    for key, value in overrides.items():
        if key in EXPERIMENT_FIELDS:
            result[key] = value
        else:
            class_args[key] = value
    result["tuner"] = {**tuner, "classArgs": class_args}
    return result


def _check_experiment_field(key: str, value: Any) -> None:
    if key == "maxExperimentDuration":
        from nni.experiment.config.utils import parse_time
        try:
            seconds = parse_time(value)
        except ValueError:
            seconds = None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"maxExperimentDuration must be a positive duration (seconds, or a number with unit "
                             f"s, m, h or d such as 30m), got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
