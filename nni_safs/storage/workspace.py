"""The workspace folder: every file a run keeps there, named here and nowhere else.

``config.json`` (the run's settings, written once), ``run.json`` (the run that owns the
workspace: an NNI experiment or ``safs run``), ``dense.pt`` / ``pruned.pt`` (computed
once by the prepare job, with the metadata that produced them), the kept models of the
table's columns, ``jobs/KEY.json`` (which trial runs the job whose spec has the key
:meth:`~nni_safs.method.contract.JobSpec.key`, and its result) with its lock,
the saved optimizer state (the in-process runner's; the tuner keeps its own in NNI's
checkpoint folder under the same name pattern), ``summary.json`` and ``results.md``. What
is computed into these files is :mod:`nni_safs.training.jobs`.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from nni_safs.method.contract import COLUMNS, Stage
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.atomic import atomic_write

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
PREPARE_LOCK = ".prepare.lock"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.md"
REPORT_FILE = "report.html"  # safs report: the run on one self-contained page
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
        """What the dense checkpoint depends on (``keep_epoch`` only when not the default, so
        checkpoints made before the key existed stay valid)."""
        c = self.config
        meta = {"model": c.model, "dataset": c.dataset, "dataset_options": dict(c.dataset_options),
                "seed": c.seed, "val_fraction": c.val_fraction, "cv_folds": c.cv_folds, "dense_epochs": c.dense_epochs,
                "train_hparams": c.hparams, "scales": "frozen"}
        return meta if c.keep_epoch == "best" else {**meta, "keep_epoch": c.keep_epoch}

    def pruned_meta(self) -> dict[str, Any]:
        return {**self.dense_meta(), "ratio": self.config.ratio, "scope": self.config.scope}

    def write_json(self, name: str, data: Any) -> Path:
        path = self.root / name
        atomic_write(path, lambda handle: handle.write(json.dumps(data, indent=2, sort_keys=True).encode()))
        return path


class WorkspaceConfigError(ValueError):
    """The workspace was set up by a run with other settings (its ``config.json`` differs)."""


class WorkspaceOwnedError(ValueError):
    """The workspace holds the record of another run (its ``run.json`` names it)."""


PATH_SETTINGS = ("workspace", "data_root", "op_choices", "hpo_space")
IN_PROCESS_RUN = "safs run"


def experiment_run(experiment_id: str) -> str:
    """The owner name of an NNI experiment's run."""
    return f"experiment {experiment_id}"


def holds_results(root: str | Path) -> bool:
    """Whether anything was computed in the workspace: a checkpoint, a job's result, or a prepare
    under way (another process holds its lock). A workspace without any (a prepare that failed)
    takes new settings."""
    root = Path(root)
    if any((root / name).is_file() for name in ("dense.pt", "pruned.pt")):
        return True
    for marker in (root / "jobs").glob("*.json"):
        try:
            if json.loads(marker.read_text()).get("result") is not None:
                return True
        except ValueError:
            return True  # unreadable: not ours to throw away
    lock = FileLock(str(root / PREPARE_LOCK))
    if (root / PREPARE_LOCK).exists():
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
    return False


def run_owner(root: str | Path) -> dict[str, Any] | None:
    """The record of the run that owns the workspace (``run.json``), or None."""
    path = Path(root) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def owned_message(root: Path, owner: dict[str, Any], run: str) -> str:
    """Why ``run`` may not write ``root``, and what a user can do instead."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner.get("started", 0)))
    summary = json.loads((root / SUMMARY_FILE).read_text()) if (root / SUMMARY_FILE).is_file() else {}
    state = ("stopped: " + summary["failure"] if summary.get("failure") else
             "finished" if summary.get("finished") else "not finished")
    resume = (f"nnictl resume {owner['run'].split()[-1]}" if owner["run"].startswith("experiment ")
              else "safs run with the same config")
    return (f"workspace {str(root)!r} is the record of {owner['run']} (started {started}, {state}); "
            f"{run} would mix its results with that run's, "
            f"so it does not start. See that run's table with `safs results {root}`; continue it with "
            f"`{resume}`; or start a new run in another workspace (`--set workspace=PATH`, or the "
            f"`workspace` classArg), or delete {str(root)!r} to start over")


def resolve_paths(config: SafsConfig, base_dir: str | Path | None = None) -> SafsConfig:
    """Make ``config``'s relative paths (``PATH_SETTINGS``) absolute against ``base_dir`` (else the
    current directory), in place."""
    for key in PATH_SETTINGS:
        value = getattr(config, key)
        if value is not None:
            path = Path(value).expanduser()
            setattr(config, key, str((path if path.is_absolute() else Path(base_dir or ".") / path).resolve()))
    return config


def open_workspace(config: SafsConfig, base_dir: str | Path | None = None, run: str | None = None) -> SafsConfig:
    """Make the paths absolute and the workspace writable, and record the settings in it, once.

    A workspace belongs to one run's settings: opening it again with different ones raises
    :class:`WorkspaceConfigError` naming every differing key (trials of a running experiment
    read ``config.json``; rewriting it would change what they run), unless nothing was computed
    in it yet (:func:`holds_results`: a prepare that failed), which then takes the new settings.

    ``run`` (an experiment's :func:`experiment_run`, or :data:`IN_PROCESS_RUN`) claims the
    workspace for that run: a workspace that holds another run's results raises
    :class:`WorkspaceOwnedError`, saying how to see, continue or leave that run.

    Relative paths (``PATH_SETTINGS``) are taken relative to ``base_dir`` (the tuner passes
    its ``codeDirectory``: NNI runs the dispatcher in the experiment's log folder and trials
    elsewhere), else to the current directory. Trials read the settings back with
    :func:`load_config`, so every process sees the same absolute paths.
    """
    resolve_paths(config, base_dir)
    root = Path(config.workspace)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"workspace {str(root)!r} is not writable: {err}") from None
    with FileLock(str(root / ".open.lock")):  # two runs opening it at once: one claims it
        computed = holds_results(root)
        owner = run_owner(root)
        if run is not None and owner is not None and owner["run"] != run and computed:
            raise WorkspaceOwnedError(owned_message(root, owner, run))
        recorded = root / CONFIG_FILE
        stored = {**SafsConfig.defaults(), **json.loads(recorded.read_text())} if recorded.is_file() else None
        wanted = config.to_dict()
        if stored is not None and stored != wanted and computed:  # write-once: running trials read it
            # a key added by a later release is read as its default: such a workspace stays usable
            diffs = [f"{key}: workspace has {stored.get(key, '<missing>')!r}, "
                     f"requested {wanted.get(key, '<missing>')!r}"
                     for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)]
            raise WorkspaceConfigError(f"workspace {str(root)!r} belongs to a run with other settings "
                                       f"({'; '.join(diffs)}); use a new workspace path, or delete the "
                                       "workspace to start over")
        taken_over = not computed and (stored != wanted or (run is not None and owner is not None
                                                               and owner["run"] != run))
        if taken_over:  # a failed prepare's leftovers: nothing in them is anyone's result
            shutil.rmtree(root / "jobs", ignore_errors=True)
            for name in (SUMMARY_FILE, RESULTS_FILE, RUNNER_STATE_FILE, RUNNER_STATE_FILE + ".journal"):
                (root / name).unlink(missing_ok=True)
        if stored != wanted:
            Workspace(config).write_json(CONFIG_FILE, wanted)
        if run is not None and (owner is None or owner["run"] != run):
            Workspace(config).write_json(RUN_FILE, {"run": run, "started": time.time()})
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


def job_marker(workspace: str | Path, key: str) -> Path:
    """Where a trial records that it started the job whose spec has ``key`` (and which NNI trial
    it is), and then its result."""
    return Path(workspace) / "jobs" / f"{key}.json"


def job_lock(workspace: str | Path, key: str) -> FileLock:
    """Held by the trial evaluating the job whose spec has ``key``; the OS releases it if that trial dies."""
    path = job_marker(workspace, key).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def load_config(workspace: str | Path) -> SafsConfig:
    """The settings a workspace was created with (its ``config.json``)."""
    path = Path(workspace) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: the workspace must be written by the SAFS tuner "
                                "(or `safs run`) and be visible to every trial (shared storage when remote)")
    return SafsConfig.from_dict(json.loads(path.read_text()))
