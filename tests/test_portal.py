"""What a user watches on a real experiment, checked in headless Chromium: the portal's metric
selector drawing one stage, TensorBoard's HParams view of every trial (by TensorBoard's own
reader and in the browser), and what the portal's TensorBoard button shows under NNI 3.0.

``SAFS_SCREENSHOTS=docs/images python -m pytest tests/test_portal.py`` refreshes the
screenshots docs/portal.md shows (by default they go to a temporary folder).
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from test_experiment_nni import Experiment

from nni_safs.method.contract import STAGE_KEYS
from nni_safs.method.genomes import genome_from_string
from nni_safs.storage.workspace import job_marker

pytestmark = pytest.mark.nni

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One experiment of every stage, run to DONE; its manager (and portal) stays up."""
    exp = Experiment(tmp_path_factory.mktemp("portal"))
    exp.create()
    try:
        exp.wait(lambda status: status == "DONE")
        yield exp
    finally:
        exp.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900})
        yield context
        context.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    return Path(os.environ.get("SAFS_SCREENSHOTS") or tmp_path)


def trials_folder(exp: Experiment) -> Path:
    """Where NNI 3.0's local trials run: each one's NNI_OUTPUT_DIR."""
    return exp.home / "nni-experiments" / exp.id / "environments" / "local-env" / "trials"


def test_each_final_result_names_its_stage_and_the_portal_draws_one_stage(finished, browser, screenshots):
    metrics = finished.final_metrics()
    assert {m["stage"] for m in metrics} == set(STAGE_KEYS)
    for m in metrics:  # the score under its own stage, 0 under the others; default unchanged
        assert {name: m[name] for name in STAGE_KEYS} == \
            {name: m["default"] if name == m["stage"] else 0.0 for name in STAGE_KEYS}, m

    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{finished.port}/detail")
    # the metric selector (the "default" dropdown beside Maximize/Minimize) lists every stage
    selector = page.locator(".default-metric .ms-Dropdown", has_text="default")
    selector.click()
    options = page.get_by_role("option")
    options.first.wait_for()
    listed = [options.nth(i).inner_text() for i in range(options.count())]
    assert set(STAGE_KEYS) <= set(listed), listed
    page.get_by_role("option", name="search", exact=True).click()
    assert page.locator(".default-metric .ms-Dropdown", has_text="search").count() == 1
    _settled(page.locator(".default-metric-graph canvas").first)
    page.screenshot(path=screenshots / "portal_stage.png")
    page.close()


def _settled(canvas) -> None:
    """Wait until the chart's canvas stops changing (ECharts animates a redraw), at most a minute."""
    drawn, deadline = None, time.monotonic() + 60
    while (now := canvas.evaluate("c => c.toDataURL()")) != drawn and time.monotonic() < deadline:
        drawn = now
        canvas.page.wait_for_timeout(500)


def _session_starts(folder: Path) -> tuple[object, dict[str, dict]]:
    """TensorBoard's own reader over ``folder``: the multiplexer and each run's hparams."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    runs = EventMultiplexer().AddRunsFromDirectory(str(folder))
    runs.Reload()
    starts = {}
    for run, tags in runs.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        info = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        starts[run] = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                       for name, value in info.hparams.items()}
    return runs, starts


def test_every_trial_writes_its_hparams_and_results_for_tensorboard(finished):
    runs, starts = _session_starts(trials_folder(finished))
    metrics = finished.final_metrics()
    # what each trial really ran: its marker in the workspace (NNI 3.0's record of a trial's
    # parameters may be another trial's, docs/nni_defects.md)
    parameters = {m["trialJobId"]: json.loads(job_marker(str(finished.workspace), m["key"]).read_text())["spec"]
                  for m in metrics}
    assert sorted(starts) == sorted(f"{m['trialJobId']}/tensorboard" for m in metrics)
    for m in metrics:
        run = f"{m['trialJobId']}/tensorboard"
        hparams, params = starts[run], parameters[m["trialJobId"]]
        assert {k: hparams[k] for k in ("stage", "variant", "job", "seed", "epochs")} == \
            {"stage": m["stage"], "variant": m["variant"], "job": m["job"], "seed": params["seed"],
             "epochs": params["epochs"]}
        assert {k.removeprefix("op/"): v for k, v in hparams.items() if k.startswith("op/")} == \
            genome_from_string(m["genome"])
        assert {k.removeprefix("hp/"): v for k, v in hparams.items() if k.startswith("hp/")} == params["hparams"]
        assert runs.Scalars(run, "result/score")[-1].value == pytest.approx(m["default"])
        if "test_acc" in m:
            assert runs.Scalars(run, "result/test_acc")[-1].value == pytest.approx(m["test_acc"])
    assert any(k.startswith("op/") for h in starts.values() for k in h)  # genomes of the search
    assert any(k.startswith("hp/") for h in starts.values() for k in h)


def _tensorboard_hparams_page(context, url: str):
    page = context.new_page()
    deadline = time.monotonic() + 60
    while True:  # TensorBoard answers a few seconds after it starts
        try:
            page.goto(url)
            break
        except Exception:
            assert time.monotonic() < deadline, f"TensorBoard did not answer at {url}"
            time.sleep(1)
    return page


def test_tensorboard_on_the_trials_folder_shows_every_trial_filterable_by_stage(finished, browser, screenshots):
    from playwright.sync_api import expect

    port = free_port()
    board = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                              str(trials_folder(finished)), "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = finished.final_metrics()
        page = _tensorboard_hparams_page(browser, f"http://127.0.0.1:{port}/#hparams")
        page.set_viewport_size({"width": 2400, "height": 900})
        for m in metrics:
            page.get_by_text(m["trialJobId"], exact=True).first.wait_for(timeout=60000)
        # show the stage and the genome's ops, leave room for the score; then keep only the search trials
        page.get_by_role("checkbox", name="stage", exact=True).check()
        for name in ("data_fraction", "epochs", "hp/weight_decay", "lr", "result/density", "result/late_val_acc"):
            page.get_by_role("checkbox", name=name, exact=True).uncheck()
        ops = page.get_by_role("checkbox", name=re.compile("^op\\W"))  # op/SLOT (a slash breaks its regex)
        for i in range(ops.count()):
            ops.nth(i).check()
        for stage in STAGE_KEYS:
            if stage != "search":
                page.get_by_role("checkbox", name=stage, exact=True).uncheck()
        search = {m["trialJobId"] for m in metrics if m["stage"] == "search"}
        others = {m["trialJobId"] for m in metrics} - search
        for trial in others:
            expect(page.get_by_text(trial, exact=True).filter(visible=True)).to_have_count(0)
        for trial in search:
            expect(page.get_by_text(trial, exact=True).filter(visible=True)).not_to_have_count(0)
        page.screenshot(path=screenshots / "tensorboard_hparams.png")
        page.close()
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_the_portals_tensorboard_button_finds_nothing_under_nni_3(finished, browser, screenshots):
    """NNI 3.0 starts TensorBoard on EXPERIMENT/trials/ID/output/tensorboard, which its v3 training
    services never fill (trials write in their NNI_OUTPUT_DIR): docs/portal.md says so and what to
    run instead; this fails when an NNI release fixes it."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{finished.port}/detail")
    boxes = page.locator(".detailTable input[type=checkbox]")
    boxes.first.wait_for(state="attached")
    for i in range(boxes.count()):
        boxes.nth(i).check(force=True)
    page.get_by_role("button", name="TensorBoard", exact=True).first.click()
    with browser.expect_page() as opened:
        page.locator(".ms-Dialog").get_by_role("button", name="Ok").click()
    try:
        task = finished.get("/tensorboard-tasks")[0]
        assert sorted(task["trialJobIdList"]) == sorted(m["trialJobId"] for m in finished.final_metrics())
        folders = [Path(folder) for folder in task["trialLogDirectoryList"]]
        assert all(folder.is_dir() and not any(folder.iterdir()) for folder in folders), folders
        assert all(any((trials_folder(finished) / trial / "tensorboard").iterdir()) for trial in task["trialJobIdList"])
        opened.value.close()  # opened at once, before TensorBoard answers: the user reloads
        board = _tensorboard_hparams_page(browser, f"http://127.0.0.1:{task['port']}/#hparams")
        board.get_by_text("No hparams data was found").wait_for(timeout=60000)
        board.screenshot(path=screenshots / "portal_tensorboard_button.png")
    finally:
        request = urllib.request.Request(f"http://127.0.0.1:{finished.port}/api/v1/nni/tensorboard-tasks",
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()
        page.close()
