"""What nni-safs borrows from NNI's and torch's insides, in one place.

NNI 3.0 is unmaintained and some of what a tuner plugin needs is private there; torch has one
private probe we rely on. Each such name is reached only through a function here, which says
what it relies on and raises :class:`BorrowedInsideError` naming the hook, the installed
version and the versions it was checked with when the name is gone. ``tests/test_borrowed.py``
holds one test per hook that fails if it stops behaving as we rely on. Imports are lazy: a
trial that needs none of these pays for none.

The hooks (``CHECKED`` lists the versions they were checked with):

* ``new_parameter_id``: NNI's dispatcher's parameter-id counter (``_create_parameter_id``);
  jobs sent ahead through ``st_callback`` take ids from it, as NNI's own requests do.
* ``serialize_sends``: NNI's ``MsgDispatcher.send`` is not thread-safe (its channel's
  ``_ensure_conn``); our sender thread and NNI's worker threads send through one lock.
* ``builtin_tuner_names``: NNI's registry of built-in tuners (``_get_all_builtin_names``).
* ``trial_parameter_id``: the parameter id of a trial's record (``nni.trial._params``).
* ``manager_address``: the manager's port and URL prefix in ``NNI_TUNER_COMMAND_CHANNEL``
  (``ws://localhost:PORT[/PREFIX]/tuner``).
* ``recorded_parameters``: a trial's parameters in the manager's ``/trial-jobs`` record
  (``hyperParameters``: JSON strings whose ``parameters`` key holds them).
* ``prunable_op_types``: the module types NNI's pruners accept (``PruningSetting.registry``).
* ``LEVEL_PRUNER_METRIC_STEP``: the step of NNI's ``LevelPruner`` that LAMP overrides
  (``_calculate_metrics``; see :mod:`nni_safs.pruning.lamp`).
* ``in_bad_fork``: whether this forked process can no longer use CUDA
  (``torch.cuda._is_in_bad_fork``; :mod:`nni_safs.integration.forkserver`).
* The HTTP trial command channel that :mod:`nni_safs.integration.trial_channel` speaks without
  importing nni (``nni/runtime/trial_command_channel/v3.py``); its test drives a real manager.
"""
from __future__ import annotations

import json
import threading
from importlib import metadata
from typing import Any, Callable
from urllib.parse import urlparse

CHECKED = {"nni": ("3.0",), "torch": ("2.13", "2.14")}  # the releases these hooks were checked with
LEVEL_PRUNER_METRIC_STEP = "_calculate_metrics"


class BorrowedInsideError(RuntimeError):
    """A private NNI or torch name we rely on is gone or changed."""


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _broken(hook: str, package: str, err: Exception) -> BorrowedInsideError:
    return BorrowedInsideError(f"nni-safs hook {hook!r} no longer works with {package} {_installed(package)} "
                               f"(checked with {package} {', '.join(CHECKED[package])}): "
                               f"{type(err).__name__}: {err}")


def unchecked_versions() -> list[str]:
    """The installed NNI/torch releases these hooks were not checked with (a warning at start)."""
    return [f"{package} {_installed(package)} (hooks checked with {', '.join(releases)})"
            for package, releases in CHECKED.items()
            if not any(_installed(package).startswith(release) for release in releases)]


def new_parameter_id() -> int:
    """A fresh parameter id from the dispatcher's own counter."""
    try:
        from nni.runtime.msg_dispatcher import _create_parameter_id
    except ImportError as err:
        raise _broken("new_parameter_id", "nni", err) from None
    return _create_parameter_id()


def serialize_sends(st_callback: Callable) -> None:
    """Make the NNI dispatcher behind ``st_callback`` send one command at a time (idempotent;
    nothing to do for a callable that is no dispatcher's, e.g. a test's)."""
    from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
    dispatcher = getattr(st_callback, "__self__", None)
    if not isinstance(dispatcher, MsgDispatcherBase):
        return
    send = getattr(dispatcher, "send", None)
    if send is None:
        raise _broken("serialize_sends", "nni", AttributeError("MsgDispatcherBase has no send()"))
    if getattr(send, "_safs_serialized", False):
        return
    lock = threading.Lock()

    def locked(command: Any, data: Any) -> Any:
        with lock:
            return send(command, data)
    locked._safs_serialized = True  # type: ignore[attr-defined]
    dispatcher.send = locked


def builtin_tuner_names() -> list[str]:
    """Every built-in tuner NNI registers, lower case."""
    try:
        from nni.tools.package_utils.tuner_factory import _get_all_builtin_names
    except ImportError as err:
        raise _broken("builtin_tuner_names", "nni", err) from None
    return sorted(name.lower() for name in _get_all_builtin_names("tuners"))


def trial_parameter_id(trial_module: Any) -> int | None:
    """The parameter id of the record ``nni.trial`` received (None before it received one)."""
    record = getattr(trial_module, "_params", None)
    return record.get("parameter_id") if isinstance(record, dict) else None


def manager_address(channel_url: str | None) -> tuple[int | None, str | None]:
    """(port, URL prefix) of the manager from the dispatcher's ``NNI_TUNER_COMMAND_CHANNEL``."""
    if not channel_url:
        return None, None
    url = urlparse(channel_url)
    if url.scheme not in ("ws", "wss") or url.port is None or not url.path.rstrip("/").endswith("/tuner"):
        raise _broken("manager_address", "nni", ValueError(f"unexpected tuner channel URL {channel_url!r}"))
    return url.port, url.path.rsplit("/tuner", 1)[0].strip("/") or None


def recorded_parameters(trial: dict[str, Any]) -> dict[str, Any] | None:
    """The parameters of a ``/trial-jobs`` record (None when it has none yet)."""
    records = trial.get("hyperParameters")
    if not records:
        return None
    try:
        params = json.loads(records[0]).get("parameters")
    except (TypeError, ValueError, AttributeError) as err:
        raise _broken("recorded_parameters", "nni", err) from None
    return params if isinstance(params, dict) else None


def prunable_op_types() -> set[str]:
    """The module type names NNI's pruners accept in a config_list's ``op_types``."""
    try:
        from nni.compression.base.setting import PruningSetting
        return set(PruningSetting.registry)
    except (ImportError, AttributeError) as err:
        raise _broken("prunable_op_types", "nni", err) from None


def check_level_pruner_step() -> None:
    """NNI's LevelPruner still computes its metrics in the step LAMP overrides."""
    from nni.compression.pruning import LevelPruner
    if not callable(getattr(LevelPruner, LEVEL_PRUNER_METRIC_STEP, None)):
        raise _broken("LEVEL_PRUNER_METRIC_STEP", "nni",
                      AttributeError(f"LevelPruner has no {LEVEL_PRUNER_METRIC_STEP}"))


def in_bad_fork() -> bool:
    """Whether this (forked) process is in torch's bad-fork state: its CUDA is unusable."""
    import torch
    probe = getattr(torch.cuda, "_is_in_bad_fork", None)
    if probe is None:
        raise _broken("in_bad_fork", "torch", AttributeError("torch.cuda._is_in_bad_fork is gone"))
    return bool(probe())
