"""`safs report`: the page of a real finished run, rendered in headless Chromium."""
import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from nni_safs.cli import main
from nni_safs.method.contract import STUDIES
from nni_safs.method.genomes import genome_from_string
from nni_safs.reports.plots import trace_points
from nni_safs.reports.results import table_cells
from nni_safs.reports.studies import param_importances, study_trials

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CELLS = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"  # a table's rows, shown or folded
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def summary(finished_run):
    return json.loads((finished_run / "summary.json").read_text())


@pytest.fixture(scope="module")
def rendered(finished_run, tmp_path_factory):
    """The report page of the finished run as headless Chromium shows it, opened from file:// with
    every request that is not the page itself recorded (and refused)."""
    out = tmp_path_factory.mktemp("report") / "page.html"
    assert main(["report", str(finished_run), "-o", str(out)]) == 0
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests = []
        page.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()
                                          if route.request.url == out.as_uri() else route.abort()))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        seen = {
            "images": page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, ok: e.complete, w: e.naturalWidth, h: e.naturalHeight,"
                       " src: e.src.slice(0, 22)}))"),
            "results": page.eval_on_selector_all("#results-table tr", CELLS),
            "winner": page.eval_on_selector_all("#winner-table tbody tr", CELLS),
            "per_seed": page.eval_on_selector_all("#per-seed-table tr", CELLS),
            "evaluations": page.eval_on_selector_all("#evaluations-table tbody tr", CELLS),
            "trials": {variant: page.eval_on_selector_all(f"#{variant}-trials-table tbody tr", "rows => rows.length")
                       for variant in STUDIES},
            "text": page.inner_text("body"),
            "screenshot": page.screenshot(full_page=True),
        }
        browser.close()
    seen["requests"] = requests
    return seen


def test_the_page_needs_nothing_but_itself(rendered, finished_run):
    assert rendered["requests"] and set(rendered["requests"]) == {rendered["requests"][0]}  # the page, nothing else
    assert all(image["src"] == "data:image/png;base64," for image in rendered["images"])


def test_every_figure_decodes(rendered):
    """The trace, and each study's scores and importance: every embedded PNG decodes in Chromium."""
    alts = [image["alt"] for image in rendered["images"]]
    assert alts == ["stage 1 search trace", *(f"{v} study {what}" for v in STUDIES for what in ("scores", "importance"))]
    for image in rendered["images"]:
        assert image["ok"] and image["w"] > 200 and image["h"] > 100, image


def test_the_screenshot_shows_a_page(rendered):
    pixels = np.asarray(Image.open(io.BytesIO(rendered["screenshot"])).convert("L"), dtype=float)
    assert pixels.shape[0] > 1500  # the whole page: tables and five figures
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # not blank: text and plots drawn


def test_the_results_table_is_the_runs(rendered, summary):
    head, row = rendered["results"]
    assert head == ["model (data)", "dense", "magnitude pruning", "stage 1", "stage 2", "SAFS"]
    assert row == ["lenet5 (mnist5k)", *table_cells(summary)]


def test_stage1_shows_every_evaluation_and_the_winners_ops(rendered, summary):
    winner = genome_from_string(summary["stages"]["search"]["winner"])
    assert rendered["winner"] == [[slot, op] for slot, op in winner.items()]
    points = trace_points(summary)
    assert len(rendered["evaluations"]) == len(points.step) > 0
    assert [row[3] for row in rendered["evaluations"]] == list(points.genomes)
    assert sum(row[2] == "accepted" for row in rendered["evaluations"]) == int(points.accepted.sum()) > 0


def test_each_study_shows_its_importance(rendered, summary):
    for variant in STUDIES:
        trials = study_trials(summary, variant)
        assert len(trials) == summary["trials_per_stage"]["hpo"] // len(STUDIES) == rendered["trials"][variant]
        importance = param_importances(trials)
        assert math.isclose(sum(importance.values()), 1.0, rel_tol=1e-6)
        assert set(importance) <= {"lr", "weight_decay"}  # what the embedded space varies
        for name, value in importance.items():
            assert f"{name}\t{value:.3f}" in rendered["text"]


def test_final_columns_per_seed(rendered, summary):
    head, *rows = rendered["per_seed"]
    seeds = summary["columns"]["safs"]["seeds"]
    assert head == ["column", *(f"seed {seed}" for seed in seeds)]
    accs = {row[0]: row[1:] for row in rows}
    assert accs["SAFS"] == [f"{acc:.2f}" for acc in summary["columns"]["safs"]["test_accs"]]
    assert set(accs) == {"magnitude pruning", "stage 1", "stage 2", "SAFS"}


def test_importance_needs_two_scored_trials_and_a_varied_setting(summary):
    trials = study_trials(summary, STUDIES[0])
    with pytest.raises(ValueError, match="at least 2"):
        param_importances(trials[:1])
    same = [type(trial)(trial.job, dict(trials[0].hparams), trial.score, trial.status) for trial in trials]
    with pytest.raises(ValueError, match="nothing varied"):
        param_importances(same)


def test_report_defaults_to_the_workspace(finished_run, capsys):
    assert main(["report", str(finished_run)]) == 0
    assert (finished_run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {finished_run / 'report.html'}" in capsys.readouterr().out


def test_report_of_no_run_says_where_it_stands(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "has not finished" in err


def test_a_stopped_run_gets_a_page_that_says_so(tmp_path):
    """A run that stopped before its stages ran (as test_cli's stopped run): the page says why, and what is missing."""
    from nni_safs.settings.config import SafsConfig
    (tmp_path / "summary.json").write_text(json.dumps({
        "config": {**SafsConfig(model="lenet5", dataset="mnist5k").to_dict(), "workspace": str(tmp_path)},
        "columns": {}, "finished": True, "failure": "every stage-1 candidate failed (5 evaluations scored 0)"}))
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "stopped: every stage-1 candidate failed (5 evaluations scored 0)" in page
    assert "Stage 1 has no winner yet." in page and "No stage-2 trial has run." in page
    assert "No final column has run." in page
