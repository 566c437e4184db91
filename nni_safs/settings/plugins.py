"""User plug-ins: your own modules that register models, datasets or ops, in every process.

A SAFS run spans processes that import only ``nni_safs``: the tuner (NNI's dispatcher), every
trial (``python -m nni_safs.trial``) and the ``safs`` command. The ``plugins`` key lists
modules each of them imports before it checks any name, so a ``@register_model`` or
``@register_dataset`` in your own code is known everywhere. A module is found on the normal
import path (an installed package) or in the current directory, which is the experiment's
``trialCodeDirectory`` for trials, its ``codeDirectory`` for the tuner, and the tuner's
``codeDirectory`` (else ``trialCodeDirectory``; the current directory for a plain YAML of
settings) for ``safs run`` / ``safs experiment``.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence


def import_plugins(modules: Sequence[str]) -> None:
    """Import each module (once); a missing or failing one is a ValueError naming it."""
    for name in modules:
        if name in sys.modules:
            continue
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            importlib.import_module(name)
        except Exception as err:
            raise ValueError(f"plugin {name!r} could not be imported ({type(err).__name__}: {err}); a plugin is "
                             "a module importable by the tuner, every trial and the safs command (installed, or "
                             "in the experiment's codeDirectory / trialCodeDirectory)") from err
