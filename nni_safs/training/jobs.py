"""What a job runs, the same in an NNI trial and in ``safs run``: one :class:`JobSpec` in, one
:class:`JobResult` out, and the training behind it.

``prepare`` trains the dense model (best validation epoch), prunes it one-shot and saves the
pruned, not yet fine-tuned checkpoint that every later job starts from. It is idempotent and
safe when several processes race to it (a file lock, atomic writes), and it refuses a
workspace whose checkpoints were made with other settings. ``run_candidate`` fine-tunes that
pruned model with a genome and hyperparameters (every other stage's job).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock
from torch import nn

from nni_safs.data import DataSplits, build_dataset
from nni_safs.data.splits import cross_validation_folds, seeded_subset
from nni_safs.data.tensors import build_loaders
from nni_safs.method.contract import JobResult, JobSpec, Stage, Status
from nni_safs.method.genomes import genome_from_string
from nni_safs.models import build_model
from nni_safs.models.activations import apply_genome, get_genome, set_scales_trainable
from nni_safs.pruning import Masks, overall_density
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.checkpoints import load_checkpoint, save_checkpoint
from nni_safs.storage.workspace import PREPARE_LOCK, Workspace, load_config, model_checkpoint, model_file
from nni_safs.training.loop import (
    EpochRecord,
    TrainResult,
    evaluate,
    fine_tune,
    resolve_device,
    resolve_precision,
    seed_everything,
    wants_channels_last,
)

Log = Callable[[str], None]

KEPT_METRICS = ("val_acc", "late_val_acc", "test_acc", "density", "best_epoch", "epochs", "seed", "timings",
                "fold_val_accs")


def run_job(spec: JobSpec, on_epoch: Callable[[EpochRecord], None] | None = None) -> JobResult:
    """Run one job of the pipeline (an exception propagates: the caller reports it as failed)."""
    start = time.perf_counter()
    keep_freed_memory()
    config = load_config(spec.workspace)
    if config.threads:
        torch.set_num_threads(config.threads)
    if spec.stage == Stage.PREPARE:
        figures = prepare(config, on_epoch=on_epoch)
        result = JobResult(spec.job, spec.stage, Status.OK, figures["pruned_val_acc"],
                           metrics={"test_acc": figures["pruned_test_acc"], **figures})
    else:
        genome = genome_from_string(spec.genome) if spec.genome else None
        keep = spec.stage in (Stage.BASELINE, Stage.FINAL) and spec.seed == config.seed  # what `safs export` reads
        final = spec.stage in (Stage.BASELINE, Stage.FINAL)
        outcome = run_candidate(config, genome, spec.hparams, spec.epochs, spec.train_scales, spec.data_fraction,
                                on_epoch=on_epoch, seed=spec.seed, folds=config.cv_folds if final else 1,
                                save_as=model_file(spec.stage, spec.variant) if keep else None)
        # a run that diverged late still scores its best epoch before the divergence
        result = JobResult(spec.job, spec.stage, Status.DIVERGED if outcome["diverged"] else Status.OK,
                           outcome["val_acc"], outcome["failure"],
                           metrics={key: outcome[key] for key in KEPT_METRICS})
    result.variant, result.genome = spec.variant, spec.genome
    result.metrics["seconds"] = time.perf_counter() - start
    result.metrics["device"] = device_used(config.device)
    return result


def device_used(setting: str) -> str:
    """Where a job with the ``device`` setting ran: ``cpu``, or ``cuda:N (the GPU's name)``."""
    device = resolve_device(setting)
    if device.type != "cuda":
        return device.type
    index = torch.cuda.current_device() if device.index is None else device.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


@functools.cache
def keep_freed_memory() -> None:
    """Let this process keep the memory it frees for its next allocations.

    Every training step frees and allocates again the same activation-sized blocks. glibc
    returns blocks above its mmap threshold (128 KiB at first) to the kernel at once, so each
    step faults their pages in again. With the threshold at its 32 MiB ceiling and trimming
    above 256 MiB they stay mapped; results are bit for bit the same. Where the C library has no ``mallopt`` (macOS,
    Windows) it does nothing; CUDA tensors have their own caching allocator.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


class _Timer:
    """Wall seconds per named phase (reported with each trial: where its time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def load_data(config: SafsConfig, fraction: float = 1.0) -> DataSplits:
    """The run's splits; cached, so in-process runs (``safs run``) read the files once.

    With no held-out split (``val_fraction: 0``, the reference's CIFAR-10 protocol) they are the
    last cross-validation fold of every training file (:func:`cv_pool`): the reference's search
    and stage-2 trials train and validate on the dense run's last fold, and its dense and pruned
    models are scored there.
    """
    options = json.dumps(config.dataset_options, sort_keys=True)
    if not holds_out(config):
        return _cached_last_fold(config.dataset, config.data_root, config.seed, config.download, fraction, options,
                                 config.cv_folds)
    return _cached_splits(config.dataset, config.data_root, config.seed, config.val_fraction, config.download,
                          fraction, options)


@functools.lru_cache(maxsize=2)
def _cached_last_fold(dataset: str, root: str | None, seed: int, download: bool, fraction: float, options: str,
                      folds: int) -> DataSplits:
    pool = _cached_splits(dataset, root, seed, 0, download, 1.0, options)
    last = cross_validation_folds(pool, folds, seed)[-1]
    if fraction == 1.0:
        return last
    plain = None if last.train_plain is None else seeded_subset(last.train_plain, fraction, seed)
    return dataclasses.replace(last, train=seeded_subset(last.train, fraction, seed), train_plain=plain)


def holds_out(config: SafsConfig) -> bool:
    """Whether the run holds a validation split out of its training files (``val_fraction`` > 0)."""
    return config.val_fraction != 0


def cv_pool(config: SafsConfig) -> DataSplits:
    """With no held-out split, the splits cross-validation divides into folds: every training file
    (the reference's 3-fold cross-validation over CIFAR-10's 50,000)."""
    return _cached_splits(config.dataset, config.data_root, config.seed, 0, config.download, 1.0,
                          json.dumps(config.dataset_options, sort_keys=True))


@functools.lru_cache(maxsize=2)
def _cached_splits(dataset: str, root: str | None, seed: int, val_fraction: float, download: bool,
                   fraction: float, options: str) -> DataSplits:
    return build_dataset(dataset, root=root, seed=seed, val_fraction=val_fraction, download=download,
                         fraction=fraction, **json.loads(options))


def new_model(config: SafsConfig, splits: DataSplits) -> nn.Module:
    """A fresh model of the run for the dataset's classes, channels and image size."""
    return build_model(config.model, num_classes=splits.num_classes, in_channels=splits.in_channels,
                       image_size=splits.image_size)


def arithmetic(config: SafsConfig, model: nn.Module, device: torch.device) -> dict[str, Any]:
    """The ``precision`` and ``channels_last`` keywords of fine_tune/evaluate for this run on ``device``."""
    return {"precision": resolve_precision(config.precision, device),
            "channels_last": wants_channels_last(model, device)}


def prepare(config: SafsConfig, log: Log = print, on_epoch: Callable | None = None) -> dict[str, Any]:
    """Make sure the workspace holds the dense and pruned checkpoints; return their figures."""
    workspace = Workspace(config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(workspace.root / PREPARE_LOCK)):
        if workspace.pruned_path.exists():
            payload = load_checkpoint(workspace.pruned_path, workspace.pruned_meta())
            log(f"workspace {workspace.root} already prepared; reusing {workspace.pruned_path.name}")
            return payload["figures"]
        device = resolve_device(config.device)
        splits = load_data(config)
        loaders = build_loaders(splits, config.batch_size, config.seed, device, config.data_loader,
                                config.num_workers)
        _, val, test = loaders

        def train_dense(fold: DataSplits) -> tuple[nn.Module, TrainResult]:
            train, fold_val, _ = loaders if fold is splits else build_loaders(
                fold, config.batch_size, config.seed, device, config.data_loader, config.num_workers, keep=False)
            seed_everything(config.seed)
            model = new_model(config, fold)
            return model, fine_tune(model, train, fold_val, config.hparams, config.dense_epochs, device,
                                    on_epoch=on_epoch, restore_best=config.keep_epoch == "best",
                                    **arithmetic(config, model, device))

        if workspace.dense_path.exists():
            seed_everything(config.seed)
            model = new_model(config, splits)
            model.load_state_dict(load_checkpoint(workspace.dense_path, workspace.dense_meta())["state"])
            model.to(device)
            log(f"reusing dense checkpoint {workspace.dense_path}")
        else:
            log(f"training dense {config.model} on {config.dataset} for {config.dense_epochs} epochs"
                + (f", {config.cv_folds}-fold cross-validation" if config.cv_folds > 1 else ""))
            model, result, fold_accs = train_folds(splits if holds_out(config) else cv_pool(config),
                                                   config.cv_folds, config.seed, train_dense)
            if result.diverged:
                raise RuntimeError(f"dense training diverged: {result.failure}")
            save_checkpoint(workspace.dense_path, model.state_dict(), workspace.dense_meta(),
                            best_epoch=result.best_epoch, best_val_acc=result.best_val_acc, fold_val_accs=fold_accs)
        fast = arithmetic(config, model, device)
        dense_val, _ = evaluate(model, val, device, **fast)
        dense_test, _ = evaluate(model, test, device, **fast)
        from nni_safs.pruning import magnitude_prune  # NNI's pruners: only prepare needs them
        masks = magnitude_prune(model, config.ratio, config.scope)
        pruned_val, _ = evaluate(model, val, device, **fast)
        pruned_test, _ = evaluate(model, test, device, **fast)
        figures = {"dense_val_acc": dense_val, "dense_test_acc": dense_test,
                   "pruned_val_acc": pruned_val, "pruned_test_acc": pruned_test,
                   "density": overall_density(masks)}
        save_checkpoint(workspace.pruned_path, model.state_dict(), workspace.pruned_meta(),
                        masks={k: v.cpu() for k, v in masks.items()}, figures=figures)
        log(f"dense test {dense_test:.2f}%, pruned at {config.ratio} ({config.scope}) "
            f"before fine-tuning {pruned_test:.2f}%, density {100 * figures['density']:.2f}%")
        return figures


def train_folds(splits: DataSplits, folds: int, seed: int,
                train: Callable[[DataSplits], tuple[nn.Module, TrainResult]]
                ) -> tuple[nn.Module, TrainResult, list[float]]:
    """``train`` on ``splits`` (``folds`` 1), or on each of ``folds`` cross-validation folds of its
    train split, keeping the model of the fold with the best validation top-1 (a diverged fold
    loses); returns it, its result and every fold's best validation top-1."""
    if folds == 1:
        model, result = train(splits)
        return model, result, []
    best: tuple[nn.Module, TrainResult] | None = None
    accs = []
    for fold in cross_validation_folds(splits, folds, seed):
        model, result = train(fold)
        accs.append(result.best_val_acc)
        if best is None or (best[1].diverged, -best[1].best_val_acc) > (result.diverged, -result.best_val_acc):
            best = model, result
    return *best, accs


def load_pruned(config: SafsConfig, splits: DataSplits, device: torch.device | str = "cpu"
                ) -> tuple[nn.Module, Masks]:
    """A fresh copy of the pruned, not yet fine-tuned model and its masks."""
    workspace = Workspace(config)
    if not workspace.pruned_path.exists():
        raise FileNotFoundError(f"workspace {str(workspace.root)!r} holds no pruned checkpoint; "
                                "run the prepare stage first (safs prepare, or the experiment's prepare trial)")
    payload = load_checkpoint(workspace.pruned_path, workspace.pruned_meta(), map_location=device)
    model = new_model(config, splits)
    model.load_state_dict(payload["state"])
    return model.to(device), payload["masks"]


def load_kept_model(workspace: str | Path, variant: str) -> tuple[nn.Module, dict[str, Any], DataSplits]:
    """A results column's kept model (``variant``: ``safs``, ``stage1``, ...) as it was trained, in
    eval mode; with its checkpoint payload (meta, state, masks) and the run's splits."""
    config = load_config(workspace)
    payload = load_checkpoint(model_checkpoint(workspace, variant), Workspace(config).pruned_meta())
    splits = load_data(config)
    model = new_model(config, splits)
    apply_genome(model, payload["meta"]["genome"])
    model.load_state_dict(payload["state"])
    return model.eval(), payload, splits


def run_candidate(config: SafsConfig, genome: dict[str, str] | None, hparams: dict[str, Any], epochs: int,
                  train_scales: bool, data_fraction: float = 1.0, splits: DataSplits | None = None,
                  on_epoch: Callable | None = None, save_as: str | None = None,
                  seed: int | None = None, folds: int = 1) -> dict[str, Any]:
    """Fine-tune the pruned checkpoint with ``genome`` (None: the model's own activations).

    The one code path of every stage after prepare (baseline, search, hpo, final): returns
    the best validation top-1 (over the epochs before any divergence), the mean validation
    top-1 of the later half of the epochs, the test top-1 of the best epoch's weights, the
    measured density and whether the run diverged. ``seed`` drives the fine-tuning's own
    randomness (data order, op initialisation; default the run's seed); the splits stay those
    of the run's seed. ``save_as`` keeps the best weights in the workspace under that file name.
    ``folds`` > 1 trains once per cross-validation fold (:func:`train_folds`); the kept fold's
    model is then scored on the held-out val split, like every other job.
    """
    timer = _Timer()
    device = resolve_device(config.device)
    seed = config.seed if seed is None else seed
    with timer("data"):
        splits = splits or load_data(config, data_fraction)
        loaders = build_loaders(splits, config.batch_size, seed, device, config.data_loader, config.num_workers)
    _, val, test = loaders
    masks: Masks = {}

    def train_pruned(fold: DataSplits) -> tuple[nn.Module, TrainResult]:
        nonlocal masks
        seed_everything(seed)
        with timer("checkpoint_load"):
            model, masks = load_pruned(config, fold, device)
        if genome is not None:
            apply_genome(model, genome)
        set_scales_trainable(model, train_scales)
        model.to(device)
        with timer("data"):
            train, fold_val, _ = loaders if fold is splits else build_loaders(
                fold, config.batch_size, seed, device, config.data_loader, config.num_workers, keep=False)
        with timer("training"):
            return model, fine_tune(model, train, fold_val, hparams, epochs, device, masks=masks, on_epoch=on_epoch,
                                    restore_best=config.keep_epoch == "best", **arithmetic(config, model, device))

    pool = splits if folds == 1 or holds_out(config) else cv_pool(config)
    model, result, fold_accs = train_folds(pool, folds, seed, train_pruned)
    fast = arithmetic(config, model, device)
    with timer("evaluation"):
        test_acc = evaluate(model, test, device, **fast)[0] if result.best_state is not None else 0.0
        if fold_accs and result.best_state is not None and holds_out(config):
            # the kept fold's model on the split the others use; with none held out, its own fold's score
            result.best_val_acc = evaluate(model, val, device, **fast)[0]
    kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if n in masks)
    total = sum(masks[n].numel() for n in masks)
    if save_as and result.best_state is not None:
        meta = {**Workspace(config).pruned_meta(), "genome": get_genome(model), "hparams": dict(hparams),
                "train_scales": train_scales, "epochs": epochs}
        weights = result.best_state if config.keep_epoch == "best" else model.state_dict()
        with timer("checkpoint_save"):
            save_checkpoint(Workspace(config).root / save_as, weights, meta, masks=masks)
    late = [r.val_acc for r in result.history[len(result.history) // 2:]]
    return {"val_acc": result.best_val_acc, "late_val_acc": sum(late) / len(late) if late else 0.0,
            "test_acc": test_acc, "best_epoch": result.best_epoch, "seed": seed,
            "epochs": result.epochs_run, "density": kept / total, "diverged": result.diverged,
            "timings": timer.seconds,
            "failure": result.failure, "history": [r.__dict__ for r in result.history], "fold_val_accs": fold_accs}
