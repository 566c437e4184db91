"""The run's results: ``summary.json`` for machines and ``results.md`` for people.

The table has the columns of the paper's: dense, magnitude pruning (the ReLU
baseline), stage 1, stage 2 and SAFS, as test top-1 of each column's final fine-tuning.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .activations import genome_from_string
from .atomic import atomic_write
from .config import SafsConfig
from .pipeline import STAGES, SafsPipeline

COLUMNS = (("dense", "dense"), ("baseline", "magnitude pruning"), ("stage1", "stage 1"),
           ("stage2", "stage 2"), ("safs", "SAFS"))


def _job_results(pipeline: SafsPipeline, stage: str, variant: str | None = None) -> list[tuple[dict, dict]]:
    """(params, result) of every job of ``stage`` (and ``variant``) that has a result, in job order."""
    return [(job.params, pipeline.results[job.id]) for job in pipeline.jobs.values()
            if job.stage == stage and variant in (None, job.variant) and pipeline.results.get(job.id) is not None]


def _column(found: list[tuple[dict, dict]]) -> dict[str, Any]:
    """One table column over its fine-tuning seeds: mean, standard deviation, every run."""
    params = found[0][0]
    accs = [r["test_acc"] for _, r in found if isinstance(r.get("test_acc"), (int, float)) and not r.get("failed")]
    vals = [r["val_acc"] for _, r in found if isinstance(r.get("val_acc"), (int, float))]
    return {"test_acc": statistics.mean(accs) if accs else None,
            "test_acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "test_accs": accs, "seeds": [p.get("seed") for p, _ in found],
            "val_acc": statistics.mean(vals) if vals else None,
            "density": found[0][1].get("density"), "genome": params["genome"],
            "hparams": params["hparams"], "train_scales": params["train_scales"],
            "epochs": params["epochs"], "jobs": [p["job"] for p, _ in found],
            "failed": "; ".join(filter(None, (r.get("failed") or r.get("failure") or "" for _, r in found)))}


def build_summary(pipeline: SafsPipeline) -> dict[str, Any]:
    """Every stage's best and the table's figures, from what the trials reported."""
    config: SafsConfig = pipeline.config
    columns: dict[str, Any] = {}
    prepared = _job_results(pipeline, "prepare")
    if prepared:
        figures = prepared[0][1]
        columns["dense"] = {"test_acc": figures.get("dense_test_acc"), "val_acc": figures.get("dense_val_acc"),
                            "density": 1.0}
    for key, (stage, variant) in {"baseline": ("baseline", None), "stage1": ("final", "stage1"),
                                  "stage2": ("final", "stage2"), "safs": ("final", "safs")}.items():
        found = _job_results(pipeline, stage, variant)
        if found:
            columns[key] = _column(found)
    best = pipeline.search.best
    hpo_best = {variant: (stream.best if stream else None) for variant, stream in pipeline.hpo.items()}
    stages = {
        "search": {"algorithm": config.search_algorithm, "evaluations": pipeline.count("search"),
                   "best_val_acc": best[1] if best else None,
                   "genome": best[0] if best else None,
                   "trace": getattr(pipeline.search, "trace", None)},
        "hpo": {variant: {"trials": stream.next_id if stream else 0,
                          "best_val_acc": best_record[1] if best_record else None,
                          "hparams": best_record[0] if best_record else None}
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
        column = columns.get(key) or {}
        acc = column.get("test_acc")
        cell = _fmt(acc)
        if len(column.get("test_accs", [])) > 1:
            cell += f" ± {column['test_acc_sd']:.2f}"
        if key in ("stage1", "stage2", "safs") and isinstance(acc, (int, float)) and isinstance(base, (int, float)):
            cell += f" ({acc - base:+.2f})"
        cells.append(cell)
    row = f"| {config['model']} ({config['dataset']}) | " + " | ".join(cells) + " |"
    seeds = config.get("final_seeds", 1)
    spread = (f"; mean ± standard deviation over {seeds} fine-tuning seeds (the dense column: one model)"
              if seeds > 1 else "")
    lines = [f"Test top-1 (%) at pruning ratio {config['ratio']} ({config['scope']} scope){spread}; "
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


def run_status(workspace: str | Path) -> str:
    """What a workspace's run has come to, for messages about files it lacks."""
    file = Path(workspace) / "summary.json"
    if not file.is_file():
        return "its run has not finished (no summary.json yet: still running, or never started)"
    summary = json.loads(file.read_text())
    if summary.get("failure"):
        return f"its run stopped early: {summary['failure']}"
    return "its run finished" if summary.get("finished") else "its run has not finished"
