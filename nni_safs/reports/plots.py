"""Figures of a finished workspace: the learned activations, per-layer density, the stage-1 walk.

The numbers behind each figure come from small functions (:func:`activation_curves`,
:func:`feeding_layers`, :func:`layer_densities`, :func:`trace_points`) so they can be checked
without looking at pixels; :func:`plot_workspace` only draws them.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from torch import nn

matplotlib.use("Agg")  # files only: no display needed (servers, CI, NNI trials)
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from nni_safs.method.contract import SAFS  # noqa: E402
from nni_safs.method.genomes import genome_to_string  # noqa: E402
from nni_safs.models import build_model, model_facts  # noqa: E402
from nni_safs.models.activations import ActivationSlot  # noqa: E402
from nni_safs.pruning.masks import weight_name  # noqa: E402
from nni_safs.reports.export import rebuild_slots  # noqa: E402
from nni_safs.storage.checkpoints import load_checkpoint  # noqa: E402
from nni_safs.storage.workspace import MODEL_CHECKPOINTS, SUMMARY_FILE  # noqa: E402

# the model to plot: SAFS, else stage 1 alone (the SAFS final may have failed or not run yet)
PLOTTED = (MODEL_CHECKPOINTS[SAFS], MODEL_CHECKPOINTS["stage1"])
# workspace file -> what writes it, for the error when it is missing
PRODUCERS = {PLOTTED[0]: "the final stage (variant safs)", PLOTTED[1]: "the final stage (variant stage1)",
             SUMMARY_FILE: "the end of a run (nni_safs.reports.results.write_results)"}
CURVE_RANGE = (-5.0, 5.0)


def plot_workspace(workspace: str | Path, output_dir: str | Path) -> list[Path]:
    """Write ``activations.png``, ``sparsity.png`` and ``search_trace.png``; return their paths."""
    workspace, output_dir = Path(workspace), Path(output_dir)
    checkpoint = _first_existing(workspace, PLOTTED)
    summary_path = _first_existing(workspace, (SUMMARY_FILE,))
    payload = load_checkpoint(checkpoint)
    meta, state, masks = payload["meta"], payload["state"], payload.get("masks", {})
    summary = json.loads(summary_path.read_text())
    densities = layer_densities(masks)
    output_dir.mkdir(parents=True, exist_ok=True)
    return [
        _plot_activations(rebuild_slots(state, meta["genome"]), feeding_layers(meta["model"], state), densities,
                          f"{meta['model']}: {checkpoint.name}", output_dir / "activations.png"),
        _plot_sparsity(densities, f"{meta['model']}, {meta.get('scope', '?')} pruning at ratio "
                       f"{meta.get('ratio', '?')}", output_dir / "sparsity.png"),
        plot_trace(trace_points(summary), output_dir / "search_trace.png"),
    ]


# ---------------------------------------------------------------------- plotted data
def activation_curves(slots: Mapping[str, ActivationSlot], x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each slot's learned ``alpha * op(beta * x)`` at ``x``."""
    with torch.no_grad():
        return {name: slot(x).numpy() for name, slot in slots.items()}


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Kept weights in % per masked parameter, in mask order."""
    return {name: 100.0 * int(mask.count_nonzero()) / mask.numel() for name, mask in masks.items()}


def feeding_layers(model_name: str, state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Slot -> the Conv2d/Linear module run last before it, found by a forward pass with hooks.

    This is the layer whose sparsity the slot sees. Best effort: if the model cannot be built
    or run from the checkpoint alone, it warns and returns ``{}`` (titles then omit sparsity).
    """
    try:
        weights = [value for key, value in state.items() if key.endswith("weight") and value.dim() in (2, 4)]
        in_channels = next(w.shape[1] for w in weights if w.dim() == 4)
        num_classes = next(w.shape[0] for w in reversed(weights) if w.dim() == 2)
        model = build_model(model_name, num_classes=num_classes, in_channels=in_channels).eval()
        size = model_facts(model_name).image_size
        return _trace_feeding(model, torch.zeros(1, in_channels, size, size))
    except Exception as err:  # a figure without sparsity beats no figure
        warnings.warn(f"cannot pair activation slots with layers for {model_name!r}: {err}")
        return {}


def _trace_feeding(model: nn.Module, dummy: torch.Tensor) -> dict[str, str]:
    feeding: dict[str, str] = {}
    last_layer = ""

    def hook(name: str, module: nn.Module) -> None:
        nonlocal last_layer
        if not isinstance(module, ActivationSlot):
            last_layer = name
        elif last_layer:
            feeding.setdefault(name, last_layer)

    handles = [module.register_forward_hook(lambda m, _i, _o, name=name: hook(name, m))
               for name, module in model.named_modules() if isinstance(module, (ActivationSlot, nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(dummy)
    finally:
        for handle in handles:
            handle.remove()
    return feeding


@dataclass(frozen=True)
class TracePoints:
    """Stage-1 evaluations in step order, as plotted."""

    step: np.ndarray  # LAHC candidate id, or the search job's position
    fitness: np.ndarray  # validation top-1 (%); NaN when no result came back
    accepted: np.ndarray | None  # LAHC's acceptance; None for algorithms without one
    discarded: np.ndarray  # still in flight when the search stopped: not part of the walk
    best: np.ndarray  # running best over the non-discarded evaluations
    algorithm: str
    genomes: tuple[str, ...]  # each evaluation's genome, ``slot=op;...``


def trace_points(summary: Mapping[str, Any]) -> TracePoints:
    """The search's evaluations from ``summary.json``: the LAHC trace, else the search jobs (ASHA's
    rungs among them, in the order they were issued)."""
    search = summary.get("stages", {}).get("search", {})
    trace = search.get("trace")
    if trace and "accepted" in trace[0]:
        entries = sorted(trace, key=lambda entry: entry["id"])
        step = np.array([entry["id"] for entry in entries], dtype=float)
        fitness = np.array([_number(entry["fitness"]) for entry in entries])
        accepted = np.array([bool(entry["accepted"]) for entry in entries])
        discarded = np.array([bool(entry["discarded"]) for entry in entries])
        genomes = tuple(genome_to_string(entry["genome"]) for entry in entries)
    else:
        jobs = [job for job in summary.get("jobs", []) if job.get("stage") == "search"]
        results = [job.get("result") or {} for job in jobs]
        step = np.arange(len(results), dtype=float)
        fitness = np.array([_number(result.get("default")) for result in results])
        accepted, discarded = None, np.zeros(len(results), dtype=bool)
        genomes = tuple(str(job.get("genome", "")) for job in jobs)
    best = np.fmax.accumulate(np.where(discarded, np.nan, fitness)) if len(fitness) else fitness
    return TracePoints(step, fitness, accepted, discarded, best, str(search.get("algorithm", "?")), genomes)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


# ---------------------------------------------------------------------- drawing
def _first_existing(workspace: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (workspace / name).is_file():
            return workspace / name
    wanted = " or ".join(f"{name} (written by {PRODUCERS[name]})" for name in names)
    raise FileNotFoundError(f"workspace {str(workspace)!r} holds no {wanted}; run the pipeline that far first")


def _plot_activations(slots: Mapping[str, ActivationSlot], feeding: Mapping[str, str],
                      densities: Mapping[str, float], title: str, path: Path) -> Path:
    x = torch.linspace(*CURVE_RANGE, 401)
    curves = activation_curves(slots, x)
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, y) in zip(axes.flat, curves.items()):
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.plot(x.numpy(), y, color="tab:blue")
        layer = feeding.get(name)
        density = densities.get(weight_name(layer)) if layer else None
        note = f"\nafter {layer}: {100 - density:.1f}% zero" if density is not None else ""
        ax.set_title(f"{name} = {slots[name].op_name}{note}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    fig.suptitle(f"Learned activations alpha * op(beta * x) ({title})", fontsize=10)
    return _save(fig, path)


def _plot_sparsity(densities: Mapping[str, float], title: str, path: Path) -> Path:
    names = [name.removesuffix(".weight") for name in densities]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2), 4))
    bars = ax.bar(range(len(names)), list(densities.values()), color="tab:blue")
    if len(names) <= 20:  # value labels stay readable
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("weights kept (%)")
    ax.set_title(f"Per-layer density: {title}", fontsize=10)
    return _save(fig, path)


def plot_trace(points: TracePoints, target: Path | BinaryIO) -> Path | BinaryIO:
    """Stage 1's walk: every evaluation's score against its step, LAHC's accepted ones marked, the best so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
    walked = ~points.discarded
    groups = [(walked, "evaluated", "o", "tab:blue")] if points.accepted is None else [
        (walked & points.accepted, "accepted", "o", "tab:green"),
        (walked & ~points.accepted, "rejected", "x", "tab:red")]
    groups.append((points.discarded, "discarded (in flight at stop)", "s", "0.7"))
    for mask, label, marker, color in groups:
        if mask.any():
            ax.scatter(points.step[mask], points.fitness[mask], marker=marker, color=color, label=label, zorder=3)
    if walked.any():
        ax.step(points.step[walked], points.best[walked], where="post", color="black", lw=1.2, label="best so far")
    ax.set_xlabel("search step")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"Stage 1 search ({points.algorithm}): {int(walked.sum())} evaluations", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, target)


def plot_study(scores: Sequence[float | None], title: str, target: Path | BinaryIO) -> Path | BinaryIO:
    """A stage-2 study: each trial's score in the order the trials were issued (failed ones at the
    bottom, marked), and the best so far."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    trial = np.arange(len(scores))
    score = np.array([_number(value) for value in scores])
    done = ~np.isnan(score)
    ax.scatter(trial[done], score[done], color="tab:blue", label="trial", zorder=3)
    if (~done).any():
        bottom = np.nanmin(score) if done.any() else 0.0
        ax.scatter(trial[~done], np.full(int((~done).sum()), bottom), marker="x", color="tab:red",
                   label="failed (no score)", zorder=3)
    if done.any():
        ax.step(trial, np.fmax.accumulate(score), where="post", color="black", lw=1.2, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, target)


def plot_importance(importances: Mapping[str, float], title: str, target: Path | BinaryIO) -> Path | BinaryIO:
    """Each hyperparameter's share of the study's score variance, largest on top."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(4.5, 0.4 * len(names) + 1.3))
    bars = ax.barh(names, [importances[name] for name in names], color="tab:orange")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title(title, fontsize=10)
    return _save(fig, target)


def _save(fig: plt.Figure, target: Path | BinaryIO) -> Path | BinaryIO:
    """Write ``fig`` as PNG to a file path or an open binary stream (a page embeds it)."""
    fig.tight_layout()
    fig.savefig(target, dpi=120, format="png")
    plt.close(fig)
    return target
