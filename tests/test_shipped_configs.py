"""Every shipped paper config runs end to end: ``safs experiment CONFIG --set ...`` through a real
nnictl experiment on CPU, with tiny budgets and small generated files in the dataset's real format.

The configs are used as shipped (model, dataset, pruning scope and ratio, hyperparameters,
search algorithm); only budgets, device, paths and the number of ImageNet16 classes are
overridden. CIFAR-10 files cannot match torchvision's official checksums, so the tuner and the
trials import a test plugin (``fake_data_plugin/``) that makes torchvision accept them.
"""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from datafiles import write_cifar10, write_imagenet16
from conftest import free_port

pytestmark = pytest.mark.nni

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "experiment_configs"
PLUGIN_DIR = HERE / "fake_data_plugin"
HPO_TRIALS = 2
MAX_SEARCH_STEPS = 1
# prepare + baseline + search start + LAHC steps + both stage-2 studies + 3 finals (final_seeds 1)
TRIALS = 1 + 1 + 1 + MAX_SEARCH_STEPS + 2 * HPO_TRIALS + 3
TINY = dict(device="cpu", threads=1, num_workers=0, batch_size=50, download=False, val_fraction=0.2,
            dense_epochs=1, baseline_epochs=1, final_epochs=1, final_seeds=1, search_epochs=1,
            search_data_fraction=0.5, search_steps=1, max_search_steps=MAX_SEARCH_STEPS,
            hpo_trials=HPO_TRIALS, hpo_epochs=1, plugins=["safs_accept_fake_cifar10"],
            trialConcurrency=2, maxTrialNumber=TRIALS, maxExperimentDuration="15m")


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    """100 training and 50 test images per dataset; ImageNet16 with labels 1..10."""
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root / "cifar10", per_batch=20, test_ids=range(1000, 1050))
    write_imagenet16(root / "imagenet16", per_batch=10, val_ids=range(1000, 1050), num_classes=10)
    return {"cifar10": root / "cifar10", "imagenet16": root / "imagenet16"}


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni{path}", timeout=10) as r:
        return json.loads(r.read().decode())


@pytest.mark.parametrize("name", ["vgg16_safs", "resnet18_safs", "efficientnet_b0_safs"])
def test_shipped_config_runs_every_stage_and_ends_done(name, data_roots, tmp_path):
    config_file = CONFIGS / f"{name}.yml"
    shipped = yaml.safe_load(config_file.read_text())["tuner"]["classArgs"]
    overrides = {**TINY, "data_root": str(data_roots[shipped["dataset"]]), "workspace": str(tmp_path / "ws")}
    if shipped["dataset"] == "imagenet16":  # the generated files hold 10 of the 1000 classes
        overrides["dataset_options"] = {"num_classes": 10}
    home, port = tmp_path / "home", free_port()
    env = dict(os.environ, HOME=str(home), NNI_CONFIG_DIR=str(home / "nni-config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    command = [sys.executable, "-m", "nni_safs.cli", "experiment", str(config_file), "--port", str(port),
               "--poll", "2", "--timeout", "900",
               *(f"--set={key}={json.dumps(value)}" for key, value in overrides.items())]
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=960)
        logs = list(home.glob("nni-experiments/*/log/dispatcher.log"))
        assert out.returncode == 0, out.stdout + out.stderr + (logs[0].read_text()[-4000:] if logs else "")

        assert get(port, "/check-status")["status"] == "DONE"
        # NNI reads TUNER_NO_MORE_TRIAL after each job sent ahead; shown as RUNNING while trials run
        progress = [line for line in out.stdout.splitlines() if line.startswith("[") and "] trials:" in line]
        assert any(line.startswith("[RUNNING]") for line in progress)
        assert not [line for line in progress if line.startswith("[TUNER_NO_MORE_TRIAL]")
                    and ("running" in line or "waiting" in line)]
        params = get(port, "/experiment")["params"]
        # the experiment-field overrides reached NNI (the shipped files say 1 and 30d / 60d)
        assert (params["trialConcurrency"], params["maxExperimentDuration"]) == (2, "15m")
        trials = get(port, "/trial-jobs")
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * len(trials)
        assert params["maxTrialNumber"] == len(trials)
        finals = [json.loads(json.loads(m["data"])) for m in get(port, "/metric-data") if m["type"] == "FINAL"]
        stages = sorted(m["stage"] for m in finals)
        assert stages == sorted(["prepare", "baseline", "hpo", "hpo", "hpo", "hpo", "final", "final", "final"]
                                + ["search"] * stages.count("search"))
        assert 2 <= stages.count("search") <= 1 + MAX_SEARCH_STEPS
        assert all(m["status"] == "ok" for m in finals)
        assert sorted(m["variant"] for m in finals if m["stage"] == "final") == ["safs", "stage1", "stage2"]

        summary = json.loads((tmp_path / "ws" / "summary.json").read_text())
        assert summary["finished"] and not summary["failure"]
        assert {k: summary["config"][k] for k in ("model", "dataset", "scope", "ratio")} == \
            {k: shipped[k] for k in ("model", "dataset", "scope", "ratio")}
        assert summary["config"]["dense_epochs"] == 1 and summary["config"]["device"] == "cpu"
        assert set(summary["columns"]) == {"dense", "baseline", "stage1", "stage2", "safs"}
        assert f"| {shipped['model']} ({shipped['dataset']}) |" in out.stdout  # the results table
        assert not list(CONFIGS.glob(f".{name}.*")), "the overridden config file handed to nnictl is removed"
    finally:
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", "--all"], env=env,
                       capture_output=True, timeout=120)
