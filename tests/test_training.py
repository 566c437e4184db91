import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nni_safs.training.loop import SCHEDULERS, build_optimizer, evaluate, fine_tune, resolve_device


def blobs(n=256, seed=0):
    """Two well separated classes: any working loop learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + (y[:, None] * 2 - 1) * 1.5
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_and_scheduler_learns(optimizer, scheduler):
    hp = {"optimizer": optimizer, "lr": 0.05 if optimizer == "sgd" else 0.01, "momentum": 0.9,
          "weight_decay": 1e-4, "scheduler": scheduler}
    seen = []
    result = fine_tune(mlp(), blobs(), blobs(seed=1), hp, epochs=6, on_epoch=seen.append)
    assert [r.epoch for r in seen] == list(range(1, 7))
    assert not result.diverged
    assert result.best_val_acc > 90.0


def test_schedulers_change_lr():
    hp = {"optimizer": "sgd", "lr": 0.1, "scheduler": "step_halving", "step_size": 2}
    result = fine_tune(mlp(), blobs(), blobs(seed=1), hp, epochs=5)
    assert [r.lr for r in result.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_best_epoch_weights_are_a_copy():
    model = mlp()
    result = fine_tune(model, blobs(), blobs(seed=1), {"optimizer": "adam", "lr": 0.01}, epochs=4,
                       restore_best=False)
    snapshot = {k: v.clone() for k, v in result.best_state.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(snapshot[k], v) for k, v in result.best_state.items())
    model.load_state_dict(result.best_state)
    assert evaluate(model, blobs(seed=1))[0] == pytest.approx(result.best_val_acc)
    assert result.history[result.best_epoch - 1].val_acc == result.best_val_acc


def test_divergence_is_reported_not_raised():
    result = fine_tune(mlp(), blobs(), blobs(seed=1), {"optimizer": "sgd", "lr": 1e30, "momentum": 0.9},
                       epochs=5)
    assert result.diverged
    assert "loss became" in result.failure
    assert result.epochs_run < 5


def test_bad_hparams_are_named():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'.*sgd, adam, adamw"):
        build_optimizer(mlp().parameters(), {"optimizer": "lbfgs", "lr": 0.1})
    with pytest.raises(ValueError, match="'lr' must be a positive"):
        build_optimizer(mlp().parameters(), {"optimizer": "sgd", "lr": -1})
    with pytest.raises(ValueError, match="unknown scheduler 'poly'"):
        fine_tune(mlp(), blobs(), blobs(), {"optimizer": "sgd", "lr": 0.1, "scheduler": "poly"}, 1)


def test_device_selection():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("mps")


_TRAIN_AND_DIGEST = """
import hashlib, sys, torch
from nni_safs.training.loop import fine_tune, warm_up
if sys.argv[1] == "warm":
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    warm_up()
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert "torch._dynamo" in sys.modules
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
fine_tune(model, data, data, {"optimizer": "adam", "lr": 0.01}, epochs=2)
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_warm_up_changes_no_later_result():
    """What the forkserver runs before forking trials: the random state and thread count stay,
    and a training afterwards gives the weights it gives in a fresh interpreter, bit for bit."""
    digests = [subprocess.run([sys.executable, "-c", _TRAIN_AND_DIGEST, mode], capture_output=True, text=True,
                              check=True).stdout for mode in ("cold", "warm")]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64
