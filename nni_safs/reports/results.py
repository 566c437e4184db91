"""The run's results: ``summary.json`` for machines and ``results.md`` for people.

The table has the columns of the paper's: dense, magnitude pruning (the ReLU
baseline), stage 1, stage 2 and SAFS, as test top-1 of each column's final fine-tuning.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from nni_safs.method.contract import COLUMNS, JobResult, JobSpec, Stage
from nni_safs.method.genomes import genome_from_string, genome_to_string
from nni_safs.method.pipeline import SafsPipeline
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.atomic import atomic_write
from nni_safs.storage.workspace import RESULTS_FILE, SUMMARY_FILE

TABLE = (("dense", "dense"), *((c.key, c.title) for c in COLUMNS))  # (summary key, title) left to right


def _job_results(pipeline: SafsPipeline, stage: Stage, variant: str | None = None) -> list[tuple[JobSpec, JobResult]]:
    """(spec, result) of every job of ``stage`` (and ``variant``) that has a result, in job order."""
    return [(job.spec, pipeline.results[job.id]) for job in pipeline.jobs.values()
            if job.stage == stage and variant in (None, job.variant) and job.id in pipeline.results]


def _column(found: list[tuple[JobSpec, JobResult]]) -> dict[str, Any]:
    """One table column over its fine-tuning seeds: mean, standard deviation, every run."""
    spec = found[0][0]
    accs = [r.metrics["test_acc"] for _, r in found if r.succeeded and isinstance(r.metrics.get("test_acc"), (int, float))]
    vals = [r.metrics["val_acc"] for _, r in found if r.succeeded and isinstance(r.metrics.get("val_acc"), (int, float))]
    return {"test_acc": statistics.mean(accs) if accs else None,
            "test_acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "test_accs": accs, "seeds": [s.seed for s, _ in found],
            "val_acc": statistics.mean(vals) if vals else None,
            "density": found[0][1].metrics.get("density"), "genome": spec.genome,
            "hparams": spec.hparams, "train_scales": spec.train_scales,
            "epochs": spec.epochs, "jobs": [s.job for s, _ in found],
            "reasons": "; ".join(r.reason for _, r in found if r.reason)}  # why a run failed or diverged


def where_trials_ran(pipeline: SafsPipeline) -> dict[str, dict[str, Any]]:
    """Per stage: how many jobs ran on each device, and how many NNI trials started warm or cold
    (jobs run in-process by ``safs run`` count as neither)."""
    where: dict[str, dict[str, Any]] = {}
    for job in pipeline.jobs.values():
        result = pipeline.results.get(job.id)
        if result is None:
            continue
        stage = where.setdefault(job.stage.value, {"devices": {}, "warm": 0, "cold": 0})
        device = result.metrics.get("device", "unknown")
        stage["devices"][device] = stage["devices"].get(device, 0) + 1
        if isinstance(result.metrics.get("warm"), bool):
            stage["warm" if result.metrics["warm"] else "cold"] += 1
    return where


def build_summary(pipeline: SafsPipeline) -> dict[str, Any]:
    """Every stage's best and the table's figures, from what the trials reported."""
    config: SafsConfig = pipeline.config
    columns: dict[str, Any] = {}
    prepared = _job_results(pipeline, Stage.PREPARE)
    if prepared:
        figures = prepared[0][1].metrics
        columns["dense"] = {"test_acc": figures.get("dense_test_acc"), "val_acc": figures.get("dense_val_acc"),
                            "density": 1.0}
    for column in COLUMNS:
        found = _job_results(pipeline, column.stage, column.variant)
        if found:
            columns[column.key] = _column(found)
    best, winner, confirmed = pipeline.search.best, pipeline.winner, pipeline.confirm_scores()
    hpo_best = {variant: (stream.best if stream else None) for variant, stream in pipeline.hpo.items()}
    stages = {
        "search": {"algorithm": config.search_algorithm, "evaluations": pipeline.count(Stage.SEARCH) + pipeline.reused,
                   "reused": pipeline.reused,
                   "best_val_acc": best[1] if best else None,
                   "genome": best[0] if best else None,
                   "trace": getattr(pipeline.search, "trace", None),
                   "winner": genome_to_string(winner[0]) if winner else None,
                   "winner_score": winner[1] if winner else None,
                   "confirm": confirmed,  # genome -> scores over the seeds it ran (a confirmation)
                   "kept_own_activation": bool(confirmed) and bool(winner)
                   and genome_to_string(winner[0]) == pipeline.confirm_genomes()[0]},
        "hpo": {variant: {"trials": stream.next_id if stream else 0,
                          "best_val_acc": best_record[1] if best_record else None,
                          "hparams": best_record[0] if best_record else None,
                          "trace": getattr(stream, "trace", None)}  # hpo_promotion: one entry per result
                for variant, stream, best_record in ((v, pipeline.hpo[v], hpo_best[v]) for v in pipeline.hpo)},
    }
    trials = {stage.value: pipeline.count(stage) for stage in Stage}
    return {"config": config.to_dict(), "columns": columns, "stages": stages, "trials_per_stage": trials,
            "where": where_trials_ran(pipeline), "finished": pipeline.finished, "failure": pipeline.failure,
            "jobs": [{**job.params, "result": pipeline.results[job.id].to_dict() if job.id in pipeline.results else None}
                     for job in pipeline.jobs.values()]}


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def table_cells(summary: dict[str, Any]) -> list[str]:
    """The table's cells in :data:`TABLE` order: mean (± sd over the final seeds) (gain over magnitude pruning)."""
    columns = summary["columns"]
    base = (columns.get("baseline") or {}).get("test_acc")
    cells = []
    for key, _ in TABLE:
        column = columns.get(key) or {}
        acc = column.get("test_acc")
        cell = _fmt(acc)
        if len(column.get("test_accs", [])) > 1:
            cell += f" ± {column['test_acc_sd']:.2f}"
        if key not in ("dense", "baseline") and isinstance(acc, (int, float)) and isinstance(base, (int, float)):
            cell += f" ({acc - base:+.2f})"
        cells.append(cell)
    return cells


def table_caption(config: dict[str, Any]) -> str:
    """What the table's figures are: ratio, scope, seeds, brackets."""
    seeds = config.get("final_seeds", 1)
    spread = (f"; mean ± standard deviation over {seeds} fine-tuning seeds (the dense column: one model)"
              if seeds > 1 else "")
    return (f"Test top-1 (%) at pruning ratio {config['ratio']} ({config['scope']} scope){spread}; "
            "in brackets: gain over magnitude pruning.")


def format_table(summary: dict[str, Any]) -> str:
    """A markdown table in the layout of the paper's, plus the chosen op per slot."""
    columns = summary["columns"]
    config = summary["config"]
    head = "| model (data) | " + " | ".join(title for _, title in TABLE) + " |"
    rule = "|---" * (len(TABLE) + 1) + "|"
    row = f"| {config['model']} ({config['dataset']}) | " + " | ".join(table_cells(summary)) + " |"
    lines = [table_caption(config), "", head, rule, row, ""]
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
    search = summary.get("stages", {}).get("search", {})
    if search.get("confirm"):
        seeds = max(len(v) for v in search["confirm"].values())  # the finalists ran every seed
        scores = {genome: sum(v) / len(v) for genome, v in search["confirm"].items() if len(v) == seeds}
        stopped = len(search["confirm"]) - len(scores)
        own = next(iter(scores))
        lines += ["", (f"Stage 1 kept the model's own activation: no searched genome beat it when re-scored "
                       f"(own {scores[own]:.2f}, best searched {max(list(scores.values())[1:], default=0):.2f})"
                       if search["kept_own_activation"] else
                       f"Stage 1's winner beat the model's own activation when re-scored "
                       f"({search['winner_score']:.2f} against {scores[own]:.2f})")
                  + f", validation top-1, mean over {seeds} fresh seeds"
                  + (f" ({stopped} more stopped after the first seed)." if stopped else ".")]
    if summary.get("where"):
        lines += ["", "| stage | device (jobs) | started warm | started cold |", "|---|---|---|---|"]
        lines += [f"| {stage} | " + ", ".join(f"{device} ({n})" for device, n in where["devices"].items())
                  + f" | {where['warm']} | {where['cold']} |" for stage, where in summary["where"].items()]
    if summary.get("failure"):
        lines += ["", f"The run stopped: {summary['failure']}"]
    return "\n".join(lines) + "\n"


def write_results(pipeline: SafsPipeline) -> str:
    """Write ``summary.json`` and ``results.md`` into the workspace; return the table."""
    summary = build_summary(pipeline)
    workspace = Path(pipeline.config.workspace)
    atomic_write(workspace / SUMMARY_FILE, lambda h: h.write(json.dumps(summary, indent=2).encode()))
    table = format_table(summary)
    atomic_write(workspace / RESULTS_FILE, lambda h: h.write(table.encode()))
    return table


def run_status(workspace: str | Path) -> str:
    """What a workspace's run has come to, for messages about files it lacks."""
    file = Path(workspace) / SUMMARY_FILE
    if not file.is_file():
        return "its run has not finished (no summary.json yet: still running, or never started)"
    summary = json.loads(file.read_text())
    if summary.get("failure"):
        return f"its run stopped early: {summary['failure']}"
    return "its run finished" if summary.get("finished") else "its run has not finished"
