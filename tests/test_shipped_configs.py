"""Every shipped paper config (the three GPU configs and the LeNet-5 row's) runs end to end through a real nnictl experiment on CPU: the GPU
acceptance run's own command (``benchmarks/gpu.py --device cpu --parts acceptance``), one config
at a time, with tiny budgets and small generated files in the dataset's real format.

The configs are used as shipped (model, dataset, pruning scope and ratio, hyperparameters,
search algorithm); only budgets, device, paths and the number of ImageNet16 classes are
overridden (``benchmarks/acceptance.py`` checks every trial, stage and the summary).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nni

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["vgg16_safs", "resnet18_safs", "efficientnet_b0_safs", "lenet5_mnist_paper"])
def test_shipped_config_is_accepted_on_cpu(name, tmp_path):
    runs_file = tmp_path / "runs.json"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--parts",
                          "acceptance", "--configs", name, "--json", str(runs_file)],
                         capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-4000:]
    (run,) = json.loads(runs_file.read_text())
    assert run["name"] == name and run["problems"] == [] and run["status"] == "DONE"
    # the experiment-field overrides reached NNI (the shipped files say 1 and 30d / 60d)
    assert (run["params"]["trialConcurrency"], run["params"]["maxExperimentDuration"]) == (2, "15m")
    assert run["figures"]["devices"] == ["cpu"] and run["figures"]["warm"] >= 1
    assert f"{name}: ACCEPTED" in out.stdout
    assert f"| {name} | yes |" in out.stdout  # the report's row
    # NNI's own status, as safs experiment prints it: never TUNER_NO_MORE_TRIAL while trials run
    progress = [line for line in run["output"].splitlines() if re.match(r"\[[A-Z_]+\] \w+: \d+ of (at most )?\d+ trials", line)]
    assert any(line.startswith("[RUNNING]") for line in progress)
    assert not [line for line in progress if line.startswith("[TUNER_NO_MORE_TRIAL]")
                and ("running" in line or "waiting" in line)]
    assert run["summary"]["config"]["dense_epochs"] == 1 and run["summary"]["config"]["device"] == "cpu"
    assert not list((REPO / "experiment_configs").glob(f".{name}.*")), "the overridden config handed to nnictl is removed"
