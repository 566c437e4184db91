"""What a process pays before it does any work: the modules its entry point imports."""
import os
import subprocess
import sys

import pytest

# Each costs 0.1-1 s per process and none is needed to run a trial or to start the tuner.
HEAVY = {
    "trial": ["matplotlib", "torchvision", "torch._dynamo", "scipy", "pandas", "nni", "requests", "sklearn",
              "torch.utils.tensorboard"],
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
