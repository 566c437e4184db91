"""A model and a dataset registered in the user's own module reach the CLI, the tuner and every trial."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_safs.settings.config import SafsConfig

HERE = Path(__file__).resolve().parent
TINY = dict(model="plugin_mlp", dataset="plugin_digits", plugins=["my_safs_plugin"], device="cpu", threads=1,
            scope="lamp", batch_size=256, dense_epochs=2, baseline_epochs=1, final_epochs=1, search_epochs=1,
            search_data_fraction=0.3, search_steps=2, max_search_steps=3, hpo_trials=2, hpo_epochs=1)


@pytest.fixture
def plugin_dir(tmp_path):
    shutil.copy(HERE / "plugin_example" / "my_safs_plugin.py", tmp_path)
    return tmp_path


def test_an_unknown_plugin_is_refused_by_name():
    with pytest.raises(ValueError, match="plugin 'no_such_safs_plugin' could not be imported"):
        SafsConfig.from_dict({"plugins": ["no_such_safs_plugin"]})


@pytest.mark.slow
def test_safs_run_uses_a_model_and_dataset_from_a_user_module(plugin_dir):
    config = plugin_dir / "run.yml"
    config.write_text(yaml.safe_dump({**TINY, "workspace": "ws"}))
    safs = Path(sys.executable).parent / "safs"
    out = subprocess.run([str(safs), "run", str(config), "--quiet"], cwd=plugin_dir, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((plugin_dir / "ws" / "summary.json").read_text())
    assert summary["finished"] and not summary["failure"]
    assert summary["config"]["model"] == "plugin_mlp" and summary["columns"]["dense"]["test_acc"] > 50.0
    assert set(summary["stages"]["search"]["genome"]) == {"2", "4"}  # the plugin model's slots


@pytest.mark.nni
def test_an_nni_experiment_uses_a_model_and_dataset_from_a_user_module(plugin_dir):
    from test_experiment_nni import Experiment
    exp = Experiment(plugin_dir, **{k: v for k, v in TINY.items()})
    data = yaml.safe_load(exp.config.read_text())
    data["trialCodeDirectory"] = data["tuner"]["codeDirectory"] = str(plugin_dir)
    exp.config.write_text(yaml.safe_dump(data))
    try:
        exp.create()
        assert exp.wait(lambda s: s == "DONE") == "DONE"
        trials = exp.get("/trial-jobs")
        assert trials and all(t["status"] == "SUCCEEDED" for t in trials), [t["status"] for t in trials]
        summary = json.loads((exp.workspace / "summary.json").read_text())
        assert summary["finished"] and not summary["failure"] and summary["config"]["dataset"] == "plugin_digits"
    finally:
        exp.stop()
