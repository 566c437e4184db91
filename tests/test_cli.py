"""`safs run` end to end on the embedded digits, then results / export / plot on its workspace."""
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, free_port, run_args

from nni_safs.cli import main
from nni_safs.reports.results import format_table
from nni_safs.reports.studies import study_trials
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.checkpoints import load_checkpoint
from nni_safs.training.jobs import load_data, new_model

pytestmark = pytest.mark.slow


def test_run_prints_a_plain_progress_line_per_job_off_a_terminal(finished_run):
    lines = (finished_run.parent / "progress.log").read_text().splitlines()
    summary = json.loads((finished_run / "summary.json").read_text())
    jobs = len(summary["jobs"])
    started = [line for line in lines if line.startswith("SAFS ")]
    assert len(started) == jobs  # one line as each job starts: no epoch lines, no carriage returns
    assert started[0].startswith("SAFS prepare (") and ": 0 of at most " in started[0]
    assert any(line.startswith("SAFS hpo (") for line in started)
    assert lines[-1].startswith(f"done: {jobs} of {jobs} jobs [")  # the exact total at the end, elapsed time
    assert "\r" not in "".join(lines)


def test_run_writes_every_column(finished_run, capsys):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    # the --set budgets, not the file's (dense 20, hpo 8 trials, uniform start)
    assert {k: summary["config"][k] for k in TINY} == TINY and summary["config"]["search_init"] == "random"
    assert summary["trials_per_stage"]["hpo"] == 2 * TINY["hpo_trials"]
    assert set(summary["columns"]) == {"dense", "baseline", "stage1", "stage2", "safs"}
    assert summary["columns"]["dense"]["test_acc"] > 50.0
    assert main(["results", str(finished_run)]) == 0
    table = capsys.readouterr().out
    assert "| lenet5 (mnist5k) |" in table and "| act1 |" in table
    assert main(["results", str(finished_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"]["safs"]["genome"]


def test_rerun_continues_instead_of_repeating(finished_run, capsys):
    before = (finished_run / "summary.json").read_text()
    assert main(run_args(finished_run)) == 0
    assert json.loads((finished_run / "summary.json").read_text())["jobs"] == json.loads(before)["jobs"]


def test_run_with_stage2_promotion_gives_the_final_columns_sets_measured_at_the_top_rung(tmp_path):
    """`safs run` on the embedded digits with ``hpo_promotion: asha``: each study starts two sets at
    1 epoch and promotes the better to 2 epochs; the stage2 and SAFS columns fine-tune that set."""
    promotion = dict(hpo_promotion="asha", hpo_trials=2, hpo_epochs=2, hpo_min_epochs=1, hpo_reduction_factor=2)
    assert main([*run_args(tmp_path / "ws"), *(f"--set={key}={value}" for key, value in promotion.items())]) == 0
    summary = json.loads((tmp_path / "ws" / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    jobs = summary["jobs"]
    assert all(job["result"]["status"] == "ok" for job in jobs)
    final = {job["variant"]: job for job in jobs if job["stage"] == "final"}
    for study, column in (("default", "stage2"), ("safs", "safs")):
        low = [job for job in jobs if job["variant"] == f"{study}-rung0"]
        top = [job for job in jobs if job["variant"] == f"{study}-rung1"]
        assert [job["epochs"] for job in low] == [1, 1] and [job["epochs"] for job in top] == [2]
        assert top[0]["hparams"] == max(low, key=lambda job: job["result"]["default"])["hparams"]
        assert final[column]["hparams"] == top[0]["hparams"]
        assert [entry["rung"] for entry in summary["stages"]["hpo"][study]["trace"]] == [0, 0, 1]
        # the report page's study: the lowest rung's sets, the scores its tuner was told
        assert [(trial.job, trial.score) for trial in study_trials(summary, study)] == \
            [(job["job"], job["result"]["default"]) for job in low]
    assert main(["report", str(tmp_path / "ws")]) == 0


def experiment_args(workspace: Path, *extra: str) -> list[str]:
    """`safs experiment` on the embedded default with run_args' settings (and ``extra`` --set)."""
    return ["experiment", *run_args(workspace)[1:2], *run_args(workspace)[3:], *extra, "--port", str(free_port())]


def test_an_experiment_on_a_finished_runs_workspace_reports_it_and_runs_nothing(finished_run, capsys, monkeypatch):
    monkeypatch.setattr("nni_safs.cli.start_experiment", lambda *a: pytest.fail("NNI was started"))
    assert main(experiment_args(finished_run)) == 0
    out = capsys.readouterr().out
    assert "already holds the finished run of safs run" in out and "nothing is run again" in out
    assert format_table(json.loads((finished_run / "summary.json").read_text())) in out  # the table, as it is


def test_a_workspace_of_another_unfinished_run_is_refused_before_nni_starts(finished_run, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr("nni_safs.cli.start_experiment", lambda *a: pytest.fail("NNI was started"))
    workspace = tmp_path / "ws"
    shutil.copytree(finished_run, workspace)
    config = json.loads((workspace / "config.json").read_text())
    (workspace / "config.json").write_text(json.dumps({**config, "workspace": str(workspace)}))
    (workspace / "run.json").write_text(json.dumps({"run": "experiment abc123", "started": 0}))
    summary = json.loads((workspace / "summary.json").read_text())
    (workspace / "summary.json").write_text(json.dumps({**summary, "finished": False}))
    assert main(experiment_args(workspace)) == 1
    err = capsys.readouterr().err
    for hint in ("experiment abc123", "not finished", f"safs results {workspace}", "nnictl resume abc123",
                 "--set workspace="):
        assert hint in err, err
    assert main(run_args(workspace)) == 2  # nor may `safs run` write into it
    assert "is the record of experiment abc123" in capsys.readouterr().err


def test_cuda_where_there_is_none_is_refused_before_nni_starts(tmp_path, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr("nni_safs.cli.start_experiment", lambda *a: pytest.fail("NNI was started"))
    assert main(experiment_args(tmp_path / "ws", "--set=device=cuda")) == 2
    assert "device 'cuda' requested but CUDA is not available" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_nni_starts(tmp_path, capsys, monkeypatch):
    import socket
    monkeypatch.setattr("nni_safs.cli.start_experiment", lambda *a: pytest.fail("NNI was started"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(experiment_args(tmp_path / "ws")[:-1] + [str(port)]) == 2
    assert f"port {port} is in use" in capsys.readouterr().err


def test_a_second_safs_run_on_a_busy_workspace_is_refused_before_it_trains(tmp_path, capsys):
    from nni_safs.storage.journal import Journal
    from nni_safs.storage.workspace import RUNNER_STATE_FILE
    holder = Journal(tmp_path / "ws" / RUNNER_STATE_FILE)  # the first `safs run`, still running
    try:
        assert main(run_args(tmp_path / "ws")) == 2
    finally:
        holder.close()
    assert f"written by another process (pid {os.getpid()})" in capsys.readouterr().err
    assert not (tmp_path / "ws" / "dense.pt").exists()  # nothing trained


def test_export_reproduces_the_final_model(finished_run, tmp_path):
    out = tmp_path / "found.py"
    assert main(["export", str(finished_run), "-o", str(out)]) == 0
    spec = importlib.util.spec_from_file_location("found", out)
    found = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(found)

    checkpoint = load_checkpoint(finished_run / "final_safs.pt")
    config = SafsConfig(**TINY, workspace=str(finished_run))
    splits = load_data(config)
    trained = new_model(config, splits)
    from nni_safs.models.activations import apply_genome
    apply_genome(trained, checkpoint["meta"]["genome"])
    trained.load_state_dict(checkpoint["state"])
    plain = new_model(config, splits)  # all-ReLU LeNet-5, as a user's own model would be
    found.install(plain)
    plain.load_state_dict(checkpoint["state"])
    images = torch.stack([splits.test[i][0] for i in range(64)])
    trained.eval(), plain.eval()
    assert torch.equal(trained(images), plain(images))


def test_plot_writes_pngs(finished_run, tmp_path):
    assert main(["plot", str(finished_run), "-o", str(tmp_path)]) == 0
    for name in ("activations.png", "sparsity.png", "search_trace.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_commands_explain_missing_workspaces(tmp_path, capsys):
    with pytest.raises(SystemExit, match="summary.json not found"):
        main(["results", str(tmp_path)])
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.py")]) == 2
    assert "final_safs.pt" in capsys.readouterr().err


def test_commands_on_a_stopped_run_say_why_files_are_missing(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({
        "config": {**SafsConfig(**TINY).to_dict(), "workspace": str(tmp_path)}, "columns": {}, "finished": True,
        "failure": "every stage-1 candidate failed (5 evaluations scored 0; see their trial logs)"}))
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.py")]) == 2
    err = capsys.readouterr().err
    assert "final_safs.pt" in err and "its run stopped early: every stage-1 candidate failed" in err
    assert main(["plot", str(tmp_path), "-o", str(tmp_path / "plots")]) == 2
    assert "its run stopped early" in capsys.readouterr().err
    assert main(["results", str(tmp_path)]) == 0
    assert "The run stopped: every stage-1 candidate failed" in capsys.readouterr().out
    running = tmp_path / "running"
    running.mkdir()
    assert main(["plot", str(running), "-o", str(tmp_path / "plots")]) == 2
    assert "has not finished (no summary.json yet" in capsys.readouterr().err
