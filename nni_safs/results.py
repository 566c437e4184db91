"""The run's results: ``summary.json`` for machines and ``results.md`` for people.

The table has the columns of the paper's: dense, magnitude pruning (the ReLU
baseline), stage 1, stage 2 and SAFS, as test top-1 of each column's final fine-tuning.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .activations import genome_from_string
from .checkpoints import atomic_write
from .config import SafsConfig
from .pipeline import STAGES, SafsPipeline

COLUMNS = (("dense", "dense"), ("baseline", "magnitude pruning"), ("stage1", "stage 1"),
           ("stage2", "stage 2"), ("safs", "SAFS"))


def _job_result(pipeline: SafsPipeline, stage: str, variant: str | None = None) -> tuple[dict, dict] | None:
    for job in pipeline.jobs.values():
        if job.stage == stage and variant in (None, job.variant) and pipeline.results.get(job.id) is not None:
            return job.params, pipeline.results[job.id]
    return None


def build_summary(pipeline: SafsPipeline) -> dict[str, Any]:
    """Every stage's best and the table's figures, from what the trials reported."""
    config: SafsConfig = pipeline.config
    columns: dict[str, Any] = {}
    prepared = _job_result(pipeline, "prepare")
    if prepared:
        figures = prepared[1]
        columns["dense"] = {"test_acc": figures.get("dense_test_acc"), "val_acc": figures.get("dense_val_acc"),
                            "density": 1.0}
    for key, (stage, variant) in {"baseline": ("baseline", None), "stage1": ("final", "stage1"),
                                  "stage2": ("final", "stage2"), "safs": ("final", "safs")}.items():
        found = _job_result(pipeline, stage, variant)
        if found:
            params, result = found
            columns[key] = {"test_acc": result.get("test_acc"), "val_acc": result.get("val_acc"),
                            "density": result.get("density"), "genome": params["genome"],
                            "hparams": params["hparams"], "train_scales": params["train_scales"],
                            "epochs": params["epochs"], "job": params["job"],
                            "failed": result.get("failed") or result.get("failure") or ""}
    best = pipeline.search_best()
    hpo_best = {variant: (stream.best() if stream else None) for variant, stream in pipeline.hpo.items()}
    stages = {
        "search": {"algorithm": config.search_algorithm, "evaluations": pipeline.count("search"),
                   "best_val_acc": best[1] if best else None,
                   "genome": best[0] if best else None,
                   "trace": getattr(pipeline.search, "trace", None)},
        "hpo": {variant: {"trials": stream.next_id if stream else 0,
                          "best_val_acc": best_record["value"] if best_record else None,
                          "hparams": best_record["params"] if best_record else None}
                for variant, stream, best_record in ((v, pipeline.hpo[v], hpo_best[v]) for v in pipeline.hpo)},
    }
    trials = {stage: pipeline.count(stage) for stage in STAGES}
    return {"config": config.to_dict(), "columns": columns, "stages": stages, "trials_per_stage": trials,
            "finished": pipeline.finished, "failure": pipeline.failure,
            "jobs": [{**job.params, "result": pipeline.results.get(job.id)} for job in pipeline.jobs.values()]}


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def format_table(summary: dict[str, Any]) -> str:
    """A markdown table in the layout of the paper's, plus the chosen op per slot."""
    columns = summary["columns"]
    config = summary["config"]
    head = "| model (data) | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    base = (columns.get("baseline") or {}).get("test_acc")
    cells = []
    for key, _ in COLUMNS:
        acc = (columns.get(key) or {}).get("test_acc")
        cell = _fmt(acc)
        if key in ("stage1", "stage2", "safs") and isinstance(acc, (int, float)) and isinstance(base, (int, float)):
            cell += f" ({acc - base:+.2f})"
        cells.append(cell)
    row = f"| {config['model']} ({config['dataset']}) | " + " | ".join(cells) + " |"
    lines = [f"Test top-1 (%) at pruning ratio {config['ratio']} ({config['scope']} scope); "
             "in brackets: gain over magnitude pruning.", "", head, rule, row, ""]
    density = (columns.get("safs") or columns.get("baseline") or {}).get("density")
    if isinstance(density, (int, float)):
        lines.append(f"Measured density of the pruned layers: {100 * density:.2f}%")
    genome = (columns.get("safs") or columns.get("stage1") or {}).get("genome")
    if genome:
        lines += ["", "| slot | op |", "|---|---|"]
        lines += [f"| {slot} | {op} |" for slot, op in genome_from_string(genome).items()]
    hparams = (columns.get("safs") or {}).get("hparams")
    if hparams:
        lines += ["", "SAFS fine-tuning hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hparams.items())]
    if summary.get("failure"):
        lines += ["", f"The run stopped: {summary['failure']}"]
    return "\n".join(lines) + "\n"


def write_results(pipeline: SafsPipeline) -> str:
    """Write ``summary.json`` and ``results.md`` into the workspace; return the table."""
    summary = build_summary(pipeline)
    workspace = Path(pipeline.config.workspace)
    atomic_write(workspace / "summary.json", lambda h: h.write(json.dumps(summary, indent=2).encode()))
    table = format_table(summary)
    atomic_write(workspace / "results.md", lambda h: h.write(table.encode()))
    return table
