"""What a process pays before it does any work: the modules its entry point imports."""
import os
import subprocess
import sys

import pytest

# Each costs 0.1-1 s per process and none is needed to run a trial or to start the tuner.
HEAVY = {
    # the trial imports torch in main(), so a warm trial's process (nni_safs.integration.forkserver) never does
    "trial": ["torch", "matplotlib", "torchvision", "scipy", "pandas", "nni", "requests", "sklearn"],
    "tuner": ["matplotlib", "torchvision", "torch._dynamo"],  # the tuner needs NNI (and so scipy, pandas)
}
ENTRY_POINTS = {"trial": "nni_safs.trial", "tuner": "nni_safs.tuner"}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_entry_point_imports_no_heavy_module_it_does_not_use(entry):
    code = (f"import sys, {ENTRY_POINTS[entry]}; "
            f"print(sorted(m for m in {HEAVY[entry]!r} if m in sys.modules))")
    env = dict(os.environ)
    if entry == "trial":  # as NNI's local training service launches one (the channel is opened later)
        env.update(NNI_TRIAL_COMMAND_CHANNEL="http://127.0.0.1:9/env/1/trial", NNI_PLATFORM="local")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{ENTRY_POINTS[entry]} imports {out.stdout.strip()}"


def test_loading_and_checking_the_settings_imports_no_torch(tmp_path):
    """The CLI, the tuner and tools read a run's settings before any training: every shipped
    config is loaded, checked and written to a workspace and read back without torch; building
    a model then imports its (lazily registered) builder."""
    code = f"""
import glob, sys, yaml
from nni_safs.settings.config import SafsConfig
from nni_safs.models import MODELS, model_facts
from nni_safs.storage.workspace import load_config, open_workspace
names = []
for path in sorted(glob.glob("experiment_configs/*_safs.yml") + glob.glob("experiment_configs/*_paper.yml")):
    args = yaml.safe_load(open(path))["tuner"]["classArgs"]
    args.update(workspace=r"{tmp_path}/" + path.split("/")[-1], data_root=r"{tmp_path}")
    config = open_workspace(SafsConfig.from_dict(args))
    assert load_config(config.workspace) == config
    names.append((config.model, config.hparams["optimizer"], model_facts(config.model).image_size))
assert len(names) == 5, names
assert "torch" not in sys.modules, "loading the settings imported torch"
model = __import__("nni_safs.models", fromlist=["build_model"]).build_model("lenet5")
assert "torch" in sys.modules and type(model).__name__ == "LeNet5"
print(sorted(names))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert "('vgg16', 'sgd', 32)" in out.stdout and "('lenet5', 'adam', 28)" in out.stdout
    assert "('lenet5_padded', 'adam', 28)" in out.stdout  # the embedded default's
