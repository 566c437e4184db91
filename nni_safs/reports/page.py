"""``safs report``: a run on one self-contained HTML page.

The page holds the results table, stage 1's path (every evaluation's score against its step,
LAHC's accepted ones marked, and the winner's op per slot), each stage-2 study (score per trial
and the hyperparameters' importance, :mod:`nni_safs.reports.studies`) and the final columns per
fine-tuning seed. Figures are PNGs embedded as ``data:`` URLs and the style is inline: the file
needs no server and no network, so it opens from ``file://``, an e-mail or a CI artifact.
Everything on it comes from the workspace's ``summary.json``.
"""
from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nni_safs.method.contract import STUDIES
from nni_safs.method.genomes import genome_from_string
from nni_safs.reports.plots import plot_importance, plot_study, plot_trace, trace_points
from nni_safs.reports.results import TABLE, table_caption, table_cells
from nni_safs.reports.studies import TITLES, param_importances, study_trials
from nni_safs.storage.atomic import atomic_write
from nni_safs.storage.workspace import REPORT_FILE, SUMMARY_FILE

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.row > * { flex: 1 1 40%; min-width: 320px; }
.note { color: #555; font-size: 0.92em; }
.failure { color: #a00; font-weight: bold; }
"""


def write_report(workspace: str | Path, output: str | Path | None = None) -> Path:
    """Write the report page of ``workspace`` to ``output`` (default ``WORKSPACE/report.html``)."""
    workspace = Path(workspace)
    file = workspace / SUMMARY_FILE
    if not file.is_file():
        raise FileNotFoundError(f"workspace {str(workspace)!r} holds no {SUMMARY_FILE}")
    page = build_page(json.loads(file.read_text()))
    output = Path(output) if output is not None else workspace / REPORT_FILE
    atomic_write(output, lambda handle: handle.write(page.encode()))
    return output


def build_page(summary: Mapping[str, Any]) -> str:
    """The HTML of the report page of the run ``summary`` (a ``summary.json``)."""
    config = summary["config"]
    title = f"SAFS run: {config['model']} on {config['dataset']}"
    body = [f"<h1>{escape(title)}</h1>", _run_line(summary),
            *_results(summary), *_stage1(summary), *_stage2(summary), *_per_seed(summary)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _run_line(summary: Mapping[str, Any]) -> str:
    config = summary["config"]
    state = ("finished" if summary.get("finished") else "not finished") if not summary.get("failure") else \
        f"<span class=\"failure\">stopped: {escape(str(summary['failure']))}</span>"
    return (f"<p>Workspace <code>{escape(str(config.get('workspace')))}</code>, seed {config.get('seed')}: "
            f"{state}. Pruning ratio {config.get('ratio')} ({escape(str(config.get('scope')))} scope); "
            f"{sum(summary.get('trials_per_stage', {}).values())} trials.</p>")


def _results(summary: Mapping[str, Any]) -> list[str]:
    config = summary["config"]
    return ["<h2 id=\"results\">Results</h2>", f"<p class=\"note\">{escape(table_caption(config))}</p>",
            _table(["model (data)", *(title for _, title in TABLE)],
                   [[f"{config['model']} ({config['dataset']})", *table_cells(summary)]], numeric_from=1,
                   table_id="results-table")]


def _stage1(summary: Mapping[str, Any]) -> list[str]:
    search = summary.get("stages", {}).get("search", {})
    points = trace_points(summary)
    out = ["<h2 id=\"stage1\">Stage 1: the activation search</h2>",
           f"<p class=\"note\">{len(points.step)} evaluations by {escape(points.algorithm)}; each point is one "
           "genome's validation top-1 at the search budget"
           + (", LAHC's accepted moves in green, rejected in red" if points.accepted is not None else "")
           + ".</p>", _figure(lambda target: plot_trace(points, target), "stage 1 search trace")]
    winner = search.get("winner")
    if winner:
        scored = (f"re-scored over {max(len(v) for v in search['confirm'].values())} fresh seeds at the confirmation "
                  "budget" if search.get("confirm") else "at the search budget")
        out += [f"<p>The winner, per slot (validation top-1 {_number(search.get('winner_score'))}, {scored}):</p>",
                _table(["slot", "op"], [list(pair) for pair in genome_from_string(winner).items()],
                       table_id="winner-table")]
    else:
        out.append("<p>Stage 1 has no winner yet.</p>")
    accepted = points.accepted if points.accepted is not None else [None] * len(points.step)
    rows = [[f"{step:.0f}", _number(score), {True: "accepted", False: "rejected", None: ""}[flag]
             + (" (discarded)" if discarded else ""), genome]
            for step, score, flag, discarded, genome in zip(points.step, points.fitness, accepted,
                                                             points.discarded, points.genomes)]
    out.append("<details><summary>Every evaluation</summary>"
               + _table(["step", "validation top-1", "move", "genome"], rows, numeric_from=0, numeric_to=2,
                        table_id="evaluations-table")
               + "</details>")
    return out


def _stage2(summary: Mapping[str, Any]) -> list[str]:
    out = ["<h2 id=\"stage2\">Stage 2: the hyperparameter studies</h2>",
           "<p class=\"note\">Each trial's validation top-1 in the order the trials were issued; importance is "
           "Optuna's fANOVA over the recorded trials (each hyperparameter's share of the score's variance, "
           "summing to 1; a hyperparameter that kept one value is left out).</p>"]
    for variant in STUDIES:
        trials = study_trials(summary, variant)
        if not trials:
            continue
        title = TITLES[variant]
        row = [_figure(lambda target: plot_study([t.score for t in trials], title, target), f"{variant} study scores")]
        try:
            importance = param_importances(trials)
        except ValueError as err:
            row.append(f"<p class=\"note\">Importance not computed: {escape(str(err))}.</p>")
        else:
            row.append("<div>" + _figure(lambda target: plot_importance(
                importance, f"Hyperparameter importance ({variant})", target), f"{variant} study importance")
                + _table(["hyperparameter", "importance"], [[k, f"{v:.3f}"] for k, v in importance.items()],
                         numeric_from=1) + "</div>")
        out += [f"<h3>{escape(title)} ({len(trials)} trials)</h3>", "<div class=\"row\">" + "".join(row) + "</div>"]
        keys = list(dict.fromkeys(key for trial in trials for key in trial.hparams))
        rows = [[str(trial.job), _number(trial.score), trial.status, *(_value(trial.hparams.get(k)) for k in keys)]
                for trial in trials]
        out.append("<details><summary>Every trial</summary>"
                   + _table(["job", "validation top-1", "status", *keys], rows, numeric_from=0, numeric_to=2,
                            table_id=f"{variant}-trials-table")
                   + "</details>")
    if len(out) == 2:
        out.append("<p>No stage-2 trial has run.</p>")
    return out


def _per_seed(summary: Mapping[str, Any]) -> list[str]:
    results = {job["job"]: job.get("result") or {} for job in summary.get("jobs", [])}
    seeds_of = {}
    for key, title in TABLE:
        column = summary.get("columns", {}).get(key) or {}
        seeds_of[title] = {seed: results.get(job, {}) for seed, job in zip(column.get("seeds", []),
                                                                          column.get("jobs", []))}
    seeds = sorted({seed for per in seeds_of.values() for seed in per})
    rows = [[title, *(_final(per.get(seed)) for seed in seeds)] for title, per in seeds_of.items() if per]
    if not rows:
        return ["<h2 id=\"per-seed\">Final columns per seed</h2>", "<p>No final column has run.</p>"]
    return ["<h2 id=\"per-seed\">Final columns per seed</h2>",
            "<p class=\"note\">Test top-1 (%) of each column's final fine-tuning, one run per seed (the table "
            "above gives their mean); the dense network is one model and not listed.</p>",
            _table(["column", *(f"seed {seed}" for seed in seeds)], rows, numeric_from=1, table_id="per-seed-table")]


def _final(result: Mapping[str, Any] | None) -> str:
    if not result:
        return "-"
    if result.get("status") not in (None, "ok"):
        return f"{result['status']}"
    return _number(result.get("test_acc"))


def _figure(draw: Callable[[io.BytesIO], Any], alt: str) -> str:
    """``draw``'s PNG embedded as a data URL."""
    buffer = io.BytesIO()
    draw(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int | None = None,
           numeric_to: int | None = None, table_id: str | None = None) -> str:
    """An HTML table; cells ``numeric_from`` to ``numeric_to`` (exclusive) are right-aligned numbers."""
    def cell(index: int, text: str) -> str:
        numeric = numeric_from is not None and index >= numeric_from and (numeric_to is None or index < numeric_to)
        return f"<td class=\"num\">{escape(text)}</td>" if numeric else f"<td>{escape(text)}</td>"
    ident = f" id=\"{table_id}\"" if table_id else ""
    return (f"<table{ident}><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(cell(i, str(text)) for i, text in enumerate(row)) + "</tr>" for row in rows)
            + "</tbody></table>")


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and value == value else "-"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
