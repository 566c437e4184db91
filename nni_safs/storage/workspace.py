"""The workspace folder: every file a run keeps there, named here and nowhere else.

``config.json`` (the run's settings, written once), ``dense.pt`` / ``pruned.pt`` (computed
once by the prepare job, with the metadata that produced them), the kept models of the
table's columns, ``jobs/N.json`` (which trial runs job N, and its result) with its lock,
the saved optimizer state (the in-process runner's; the tuner keeps its own in NNI's
checkpoint folder under the same name pattern), ``summary.json`` and ``results.md``. What
is computed into these files is :mod:`nni_safs.training.jobs`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from nni_safs.storage.atomic import atomic_write
from nni_safs.settings.config import SafsConfig
from nni_safs.method.contract import COLUMNS, Stage

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.md"
RUNNER_STATE_FILE = "safs_runner_state.json"  # safs run's optimizer state (snapshot + .journal)
TUNER_STATE_FILE = "safs_tuner_state.json"  # SafsTuner's, in NNI's checkpoint folder (else the workspace)


class Workspace:
    """Paths and checkpoint metadata of one workspace folder."""

    def __init__(self, config: SafsConfig) -> None:
        self.config = config
        self.root = Path(config.workspace)

    @property
    def dense_path(self) -> Path:
        return self.root / "dense.pt"

    @property
    def pruned_path(self) -> Path:
        return self.root / "pruned.pt"

    def dense_meta(self) -> dict[str, Any]:
        c = self.config
        return {"model": c.model, "dataset": c.dataset, "dataset_options": dict(c.dataset_options),
                "seed": c.seed, "val_fraction": c.val_fraction, "cv_folds": c.cv_folds, "dense_epochs": c.dense_epochs,
                "train_hparams": c.hparams, "scales": "frozen"}

    def pruned_meta(self) -> dict[str, Any]:
        return {**self.dense_meta(), "ratio": self.config.ratio, "scope": self.config.scope}

    def write_json(self, name: str, data: Any) -> Path:
        path = self.root / name
        atomic_write(path, lambda handle: handle.write(json.dumps(data, indent=2, sort_keys=True).encode()))
        return path


class WorkspaceConfigError(ValueError):
    """The workspace was set up by a run with other settings (its ``config.json`` differs)."""


PATH_SETTINGS = ("workspace", "data_root", "op_choices", "hpo_space")


def open_workspace(config: SafsConfig, base_dir: str | Path | None = None) -> SafsConfig:
    """Make the paths absolute and the workspace writable, and record the settings in it, once.

    A workspace belongs to one run's settings: opening it again with different ones raises
    :class:`WorkspaceConfigError` naming every differing key (trials of a running experiment
    read ``config.json``; rewriting it would change what they run).

    Relative paths (``PATH_SETTINGS``) are taken relative to ``base_dir`` (the tuner passes
    its ``codeDirectory``: NNI runs the dispatcher in the experiment's log folder and trials
    elsewhere), else to the current directory. Trials read the settings back with
    :func:`load_config`, so every process sees the same absolute paths.
    """
    for key in PATH_SETTINGS:
        value = getattr(config, key)
        if value is not None:
            path = Path(value).expanduser()
            setattr(config, key, str((path if path.is_absolute() else Path(base_dir or ".") / path).resolve()))
    root = Path(config.workspace)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"workspace {str(root)!r} is not writable: {err}") from None
    recorded = root / CONFIG_FILE
    if recorded.is_file():  # write-once: running trials read it, so it must never change under them
        # a key added by a later release is read as its default: such a workspace stays usable
        stored = {**SafsConfig.defaults(), **json.loads(recorded.read_text())}
        wanted = config.to_dict()
        diffs = [f"{key}: workspace has {stored.get(key, '<missing>')!r}, requested {wanted.get(key, '<missing>')!r}"
                 for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)]
        if diffs:
            raise WorkspaceConfigError(f"workspace {str(root)!r} belongs to a run with other settings "
                                       f"({'; '.join(diffs)}); use a new workspace path, or delete the "
                                       "workspace to start over")
    else:
        Workspace(config).write_json(CONFIG_FILE, config.to_dict())
    return config


def model_file(stage: Stage, variant: str) -> str:
    """The file a baseline or final job keeps its model in (for the run's own seed)."""
    return f"{stage.value}_{variant}.pt"


# a results column's key -> its model's checkpoint: the variants `safs export` offers
MODEL_CHECKPOINTS = {column.key: model_file(column.stage, column.variant) for column in COLUMNS}


def model_checkpoint(workspace: str | Path, variant: str) -> Path:
    """The checkpoint of ``variant``'s model (a results column) in ``workspace``; errors name the
    variants it holds.

    An unknown variant raises ValueError; a known one whose file is missing (the run has not
    got that far, or that stage failed) raises FileNotFoundError.
    """
    root = Path(workspace)
    held = [name for name, file in MODEL_CHECKPOINTS.items() if (root / file).is_file()]
    holds = f"this workspace holds {', '.join(held)}" if held else "this workspace holds none yet"
    if variant not in MODEL_CHECKPOINTS:
        raise ValueError(f"unknown variant {variant!r}; variants are {', '.join(MODEL_CHECKPOINTS)}; {holds}")
    path = root / MODEL_CHECKPOINTS[variant]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} (variant {variant}) does not exist; {holds}")
    return path


def job_marker(workspace: str | Path, job: int) -> Path:
    """Where a trial records that it started job ``job`` (and which NNI trial it is)."""
    return Path(workspace) / "jobs" / f"{job}.json"


def job_lock(workspace: str | Path, job: int) -> FileLock:
    """Held by the trial evaluating job ``job``; the OS releases it if that trial dies."""
    path = job_marker(workspace, job).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def load_config(workspace: str | Path) -> SafsConfig:
    """The settings a workspace was created with (its ``config.json``)."""
    path = Path(workspace) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: the workspace must be written by the SAFS tuner "
                                "(or `safs run`) and be visible to every trial (shared storage when remote)")
    return SafsConfig.from_dict(json.loads(path.read_text()))
