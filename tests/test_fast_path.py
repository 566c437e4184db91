"""The GPU fast path, checked on the CPU: tensor-held data augmented in batch, bf16 autocast,
channels_last, masks still exact, same results for the same seed, same accuracy as the
DataLoader path within noise; and the benchmark's tiny mode runs.
"""
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from nni_safs.data import DataSplits, build_dataset
from nni_safs.data.augment import PadCropFlip
from nni_safs.data.tensors import TensorLoader, build_loaders, hold, resolve_data_loader
from nni_safs.models import build_model
from nni_safs.pruning import MaskHolder, magnitude_prune
from nni_safs.settings.config import SafsConfig
from nni_safs.training.loop import evaluate, fine_tune, resolve_precision, seed_everything

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.25), (0.5, 0.125)  # black normalizes to -1 and -2: padding must be per channel
HP = {"optimizer": "adam", "lr": 1e-3}


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> what ToTensor + Normalize(MEAN, STD) make of it."""
    return TF.normalize(pixels.float() / 255, MEAN, STD)


# --------------------------------------------------------------------------- augmentation


def test_pad_crop_flip_outputs_exactly_the_torchvision_candidates():
    """Every output is one of torchvision's pad(black)-crop-flip results, and all of them occur."""
    aug = PadCropFlip(size=5, padding=1, mean=MEAN, std=STD)
    pixels = torch.arange(2 * 5 * 5, dtype=torch.uint8).view(1, 2, 5, 5) * 2 + 10
    candidates = []
    for top, left, flip in itertools.product(range(3), range(3), (False, True)):
        view = TF.crop(TF.pad(pixels, [1], fill=0), top, left, 5, 5)
        candidates.append(normalize(TF.horizontal_flip(view) if flip else view)[0])
    out = aug(normalize(pixels).expand(400, -1, -1, -1), torch.Generator().manual_seed(0))
    assert out.shape == (400, 2, 5, 5) and out.dtype == torch.float32
    hits = [[i for i, c in enumerate(candidates) if torch.allclose(image, c)] for image in out]
    assert all(len(h) == 1 for h in hits)  # each output is exactly one candidate
    assert {h[0] for h in hits} == set(range(len(candidates)))  # and every candidate is drawn


def test_pad_crop_flip_is_seeded_and_rejects_wrong_shapes():
    aug = PadCropFlip(size=8, padding=2, mean=MEAN, std=STD)
    images = torch.randn(16, 2, 8, 8)
    first = aug(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, aug(images, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match=r"cannot augment images of shape \(3, 8, 8\)"):
        aug(torch.randn(4, 3, 8, 8))


# --------------------------------------------------------------------------- tensor loader


def test_tensor_loader_batches_cover_the_split_in_a_seeded_order():
    images, labels = torch.randn(70, 1, 4, 4), torch.arange(70)
    loader = TensorLoader(images, labels, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    epochs = [list(loader) for _ in range(2)]
    assert len(loader) == 3 and [len(b[1]) for b in epochs[0]] == [32, 32, 6]
    orders = [torch.cat([b[1] for b in epoch]) for epoch in epochs]
    assert sorted(orders[0].tolist()) == list(range(70))
    assert not torch.equal(orders[0], orders[1])  # a new order each epoch
    assert all(torch.equal(b[0], images[b[1]]) for b in epochs[0])  # images follow their labels
    again = TensorLoader(images, labels, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([b[1] for b in again]), orders[0])
    plain = TensorLoader(images, labels, 32)
    assert torch.equal(torch.cat([b[1] for b in plain]), labels)


def test_build_loaders_holds_the_plain_train_view_and_augments_it(monkeypatch):
    splits = build_dataset("mnist5k", seed=0)
    train, val, test = build_loaders(splits, 128, seed=0, device="cpu", data_loader="tensor")
    assert isinstance(train, TensorLoader) and train.augmentation is None  # MNIST: no augmentation
    assert (len(train.labels), len(val.labels), len(test.labels)) == (3600, 400, 1000)
    assert torch.equal(val.images, torch.stack([splits.val[i][0] for i in range(len(splits.val))]))
    assert torch.equal(train.images[5], splits.train[5][0]) and train.labels[5] == splits.train[5][1]
    assert isinstance(build_loaders(splits, 128, 0, "cpu")[0], DataLoader)  # auto on the CPU


def test_data_loader_choice_is_validated_and_needs_a_plain_view():
    splits = build_dataset("synthetic", size=120)
    cpu = torch.device("cpu")
    assert resolve_data_loader("auto", splits, cpu) == "dataloader"
    assert resolve_data_loader("tensor", splits, cpu) == "tensor"
    with pytest.raises(ValueError, match="unknown data_loader 'gpu'; valid: auto, tensor, dataloader"):
        resolve_data_loader("gpu", splits, cpu)
    opaque = DataSplits(splits.train, splits.val, splits.test, 10, 1, 28, "mine")  # no train_plain
    with pytest.raises(ValueError, match="dataset 'mine' does not provide train_plain"):
        build_loaders(opaque, 16, 0, cpu, "tensor")
    assert resolve_data_loader("auto", opaque, cpu) == "dataloader"


def test_a_data_fraction_keeps_train_and_its_plain_view_aligned():
    small = build_dataset("synthetic", seed=3, fraction=0.2)
    assert len(small.train) == len(small.train_plain) == 180
    assert all(torch.equal(small.train[i][0], small.train_plain[i][0]) for i in range(len(small.train)))


# --------------------------------------------------------------------------- precision, layout, masks


def test_precision_is_resolved_and_validated():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be resolved to 'fp32' or 'bf16' here, got 'auto'"):
        fine_tune(build_model("lenet5"), [], [], HP, 1, precision="auto")


@pytest.mark.parametrize("key, value", [("precision", "fp16"), ("data_loader", "gpu")])
def test_config_rejects_unknown_precision_and_loader(key, value):
    with pytest.raises(ValueError, match=f"unknown {key} '{value}'; valid: auto, "):
        SafsConfig.from_dict({key: value})
    assert getattr(SafsConfig.from_dict({key: "auto"}), key) == "auto"


def test_masks_hold_exactly_under_bf16_autocast_and_channels_last():
    """Weights stay float32 (autocast casts copies), so the pruned ones stay exactly zero."""
    seed_everything(0)
    splits = build_dataset("synthetic", seed=0, size=240)
    model = build_model("lenet5")
    masks = magnitude_prune(model, 0.9, "layer")
    seen = {}

    def spy(module, inputs, output):
        seen["dtype"] = output.dtype
        weight = module.weight
        seen["nhwc"] = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    handle = model.conv2.register_forward_hook(spy)
    train, val, _ = build_loaders(splits, 32, 0, "cpu", "tensor")
    result = fine_tune(model, train, val, {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-3}, 2,
                       masks=masks, precision="bf16", channels_last=True)  # checks the masks every epoch
    handle.remove()
    assert seen == {"dtype": torch.bfloat16, "nhwc": True}  # it really ran bf16, NHWC
    assert not result.diverged and result.history[-1].train_loss < result.history[0].train_loss
    assert MaskHolder(model, masks).violations() == {}
    assert all(p.is_contiguous() for p in model.parameters())  # handed back in the default layout
    assert all(v.is_contiguous() for v in result.best_state.values())
    fp32, bf16 = (evaluate(model, val, "cpu", p)[0] for p in ("fp32", "bf16"))
    assert abs(fp32 - bf16) <= 5.0


# --------------------------------------------------------------------------- same results


def _lenet_on_mnist5k(data_loader: str, seed: int, epochs: int = 4) -> tuple[float, list]:
    splits = build_dataset("mnist5k", seed=0)
    train, val, test = build_loaders(splits, 128, seed, "cpu", data_loader)
    seed_everything(seed)
    model = build_model("lenet5")
    result = fine_tune(model, train, val, HP, epochs)
    return evaluate(model, test)[0], [r.val_acc for r in result.history]


def test_tensor_path_is_deterministic_and_as_accurate_as_the_dataloader_path():
    """LeNet-5 on mnist5k, 4 epochs, 2 seeds each way: the paths differ only in batch order."""
    tensor = [_lenet_on_mnist5k("tensor", seed) for seed in (0, 1)]
    assert _lenet_on_mnist5k("tensor", 0) == tensor[0]  # same seed, same result, bit for bit
    loader = [_lenet_on_mnist5k("dataloader", seed) for seed in (0, 1)]
    tensor_mean, loader_mean = (sum(acc for acc, _ in runs) / 2 for runs in (tensor, loader))
    assert tensor_mean > 85 and loader_mean > 85
    assert abs(tensor_mean - loader_mean) < 3.0, (tensor, loader)  # seed-to-seed spread is ~1-2 points


def test_workspace_run_on_the_fast_path(tmp_path):
    """prepare + one candidate with the tensor path and bf16 forced on the CPU, masks held."""
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import prepare, run_candidate
    config = open_workspace(SafsConfig(model="lenet5", dataset="synthetic", device="cpu", workspace=str(tmp_path),
                                       data_loader="tensor", precision="bf16", ratio=0.5, dense_epochs=3,
                                       batch_size=64))
    hold.cache_clear()
    figures = prepare(config, log=lambda message: None)
    assert hold.cache_info().misses == 3  # train, val and test were held as tensors
    out = run_candidate(config, None, config.hparams, 2, train_scales=False)
    assert out["density"] == pytest.approx(figures["density"]) == pytest.approx(0.5, abs=0.01)
    assert not out["diverged"] and out["test_acc"] > 50  # 10 classes: learning, far above chance


def test_cross_validation_folds_are_not_kept_on_the_device(tmp_path):
    """With cv_folds, each fold's splits are held for its training only: the process keeps the
    run's own train, val and test, not a copy per fold (on a GPU, one training set each)."""
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import prepare, run_candidate
    config = open_workspace(SafsConfig(model="lenet5", dataset="synthetic", device="cpu", workspace=str(tmp_path),
                                       data_loader="tensor", ratio=0.5, dense_epochs=1, batch_size=64, cv_folds=3))
    hold.cache_clear()
    prepare(config, log=lambda message: None)
    out = run_candidate(config, None, config.hparams, 1, train_scales=False, folds=config.cv_folds)
    assert len(out["fold_val_accs"]) == 3 and out["test_acc"] > 10
    assert hold.cache_info().currsize == 3  # the run's train, val and test only


# --------------------------------------------------------------------------- benchmark


def test_gpu_benchmark_tiny_mode_runs_on_cpu():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| dataloader/", "| tensor/"))]
    assert len(rows) == 6  # 3 paths x with/without masks
    assert "| tensor/bf16/channels_last | yes |" in out.stdout and "Fast path with masks:" in out.stdout
    assert not (REPO / "benchmarks" / "results" / "gpu.md").exists() or "CPU" not in \
        (REPO / "benchmarks" / "results" / "gpu.md").read_text()  # tiny CPU runs write no report
