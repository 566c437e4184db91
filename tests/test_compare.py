"""`safs compare` on real finished runs: two stage-1 algorithms over the same two seeds."""
import json
import statistics
from pathlib import Path

import pytest
from conftest import run_args
from scipy import stats

from nni_safs.cli import main
from nni_safs.reports.intervals import interval, mean_interval
from nni_safs.reports.results import TABLE


def test_interval_is_students_t():
    values = [1.0, 2.5, 0.5, 3.0]
    mean, low, high = mean_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected) and mean == pytest.approx(1.75)
    assert interval(values) == f"+1.75 [{expected[0]:+.2f}, {expected[1]:+.2f}]"
    assert interval([2.0], signed=False) == "2.00" and mean_interval([2.0]) == (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def runs(finished_run, tmp_path_factory):
    """{(search_algorithm, seed): workspace}: the shared finished run (LAHC, seed 0) and three more."""
    root = tmp_path_factory.mktemp("compare")
    found = {("lahc", 0): finished_run}
    for algorithm, seed in (("lahc", 1), ("random", 0), ("random", 1)):
        workspace = root / f"{algorithm}_{seed}"
        assert main(run_args(workspace, seed=seed, search_algorithm=algorithm)) == 0
        found[(algorithm, seed)] = workspace
    return found


def column(workspace: Path, key: str) -> float:
    return json.loads((workspace / "summary.json").read_text())["columns"][key]["test_acc"]


def tables(out: str, first: str) -> list[dict[str, list[str]]]:
    """Each markdown table whose header starts with ``first``, as label -> cells."""
    tables, current = [], None
    for line in out.splitlines():
        if line.startswith(f"| {first} |"):
            current = {}
            tables.append(current)
        elif current is not None and line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            current[cells[0]] = cells[1:]
        elif not line.startswith("|"):
            current = None
    return tables


@pytest.mark.slow
def test_groups_by_the_key_and_pairs_by_seed(runs, capsys):
    order = [runs[("lahc", 0)], runs[("random", 1)], runs[("lahc", 1)], runs[("random", 0)]]
    assert main(["compare", *map(str, order), "--by", "search_algorithm"]) == 0
    means, within, between = tables(capsys.readouterr().out, "search_algorithm")
    safs = TABLE.index(("safs", "SAFS"))
    for algorithm in ("lahc", "random"):
        mine = [runs[(algorithm, seed)] for seed in (0, 1)]
        assert means[algorithm][:2] == ["2", "0, 1"]
        assert means[algorithm][2 + safs] == interval([column(ws, "safs") for ws in mine], signed=False)
        assert within[algorithm][1] == interval([column(ws, "safs") - column(ws, "baseline") for ws in mine])
    paired = [column(runs[("random", s)], "safs") - column(runs[("lahc", s)], "safs") for s in (0, 1)]
    assert between["random - lahc"][0] == "2"  # seeds paired
    assert between["random - lahc"][1 + safs] == interval(paired)


@pytest.mark.slow
def test_by_default_groups_by_the_settings_that_differ(runs, capsys):
    assert main(["compare", *map(str, runs.values())]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 finished runs grouped by search_algorithm.")
    assert set(tables(out, "search_algorithm")[0]) == {"lahc", "random"}
    assert main(["compare", str(runs[("lahc", 0)]), str(runs[("lahc", 1)])]) == 0  # nothing differs: one group
    means, *others = tables(capsys.readouterr().out, "runs")
    assert list(means) == ["all runs"] and means["all runs"][:2] == ["2", "0, 1"] and len(others) == 1


@pytest.mark.slow
def test_a_seed_run_twice_is_not_paired(runs, capsys):
    lahc0 = str(runs[("lahc", 0)])
    assert main(["compare", lahc0, lahc0, str(runs[("random", 0)]), "--by", "search_algorithm"]) == 0
    assert "Groups not paired by seed: lahc ran a seed more than once." in capsys.readouterr().out


@pytest.mark.slow
def test_bad_input_names_the_value_and_the_valid_ones(runs, tmp_path, capsys):
    good = str(runs[("lahc", 0)])
    assert main(["compare", good, "--by", "no_such_key"]) == 2
    err = capsys.readouterr().err
    assert "unknown --by key 'no_such_key'" in err and "search_algorithm" in err and "dense_epochs" in err
    (tmp_path / "running").mkdir()
    assert main(["compare", good, str(tmp_path / "running"), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'running'}' is not a finished run's workspace" in err and "has not finished" in err
    assert f"'{tmp_path / 'nowhere'}'" in err and "no such folder" in err
    assert f"Finished runs among those given: {good}" in err


@pytest.mark.slow
def test_a_stopped_run_is_refused(runs, tmp_path, capsys):
    """A run that stopped early (its summary names the failure) is not a finished run to compare."""
    import shutil
    stopped = tmp_path / "stopped"
    shutil.copytree(runs[("random", 0)], stopped)
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "failure": "every stage-1 candidate failed"}))
    assert main(["compare", str(runs[("lahc", 0)]), str(stopped)]) == 2
    assert "is not a finished run: its run stopped early: every stage-1 candidate failed" in capsys.readouterr().err
