"""The GPU acceptance run: the shipped paper configs through nnictl on CUDA, and VGG-16's epoch time.

(a) Acceptance (``benchmarks/acceptance.py``): ``vgg16_safs``, ``resnet18_safs`` and
    ``efficientnet_b0_safs`` through ``safs experiment`` with ``--set`` tiny budgets on generated
    files in the datasets' real on-disk formats, NNI's local training service, two trials at a
    time on the one device, so trials start warm. Passes when every trial SUCCEEDED, ran on the
    asked device and some started warm; reports warm and cold trials' start-up.
(b) Epoch time of VGG-16 (13 conv + BN, CIFAR form) at batch 256 on CIFAR-shaped synthetic
    data that goes through CIFAR-10's real input pipeline (uint8 HWC pixels -> PIL ->
    pad-crop-flip -> ToTensor -> Normalize): 45,000 train and 5,000 val images, one epoch =
    train + validate, as a trial pays it. Paths, each with and without the mask hooks (ratio
    0.99, per layer):
      dataloader/fp32   the DataLoader pipeline (``num_workers`` processes), float32, NCHW
      tensor/fp32       the splits held on the device, augmented there, float32, NCHW
      tensor/bf16/cl    the fast path: held on the device, bf16 autocast, channels_last
    Arithmetic floor on one H100: ~0.2 s per epoch (~47 TFLOP).

On a GPU machine, from a clean checkout (the report names its commit; no network needed after
the installs), sized for about 6 minutes on one H100:

    python3 -m venv .venv && . .venv/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 && pip install -e .
    python benchmarks/gpu.py            # (a) and (b); writes benchmarks/results/gpu.md

    python benchmarks/gpu.py --device cpu --parts acceptance --configs vgg16_safs  # the CPU check (tests)
    python benchmarks/gpu.py --tiny --device cpu   # a CPU smoke run of (b) in < 1 min (tests run it)

The report is written only for a full-size CUDA run of both parts from a clean tree; every run
prints its figures, and the exit status is 1 when a config was not accepted.
"""
from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import acceptance  # benchmarks/acceptance.py (scripts run from this folder)
import numpy as np
import torch
from PIL import Image
from report import write_report  # benchmarks/report.py
from torch.utils.data import Dataset

from nni_safs.data import DataSplits
from nni_safs.data.splits import splits_from_files
from nni_safs.data.tensors import build_loaders, hold
from nni_safs.data.vision import CIFAR10_AUGMENT, CIFAR10_MEAN, CIFAR10_STD, image_transforms
from nni_safs.models import build_model
from nni_safs.pruning import magnitude_prune
from nni_safs.training.loop import fine_tune, resolve_device, seed_everything

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HPARAMS = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}  # vgg16's paper setting


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    batch_size: int
    epochs: int  # timed epochs after one warm-up epoch


FULL = Sizes(train=45_000, val=5_000, batch_size=256, epochs=2)
TINY = Sizes(train=32, val=16, batch_size=16, epochs=1)
PATHS = (("dataloader", "fp32", False), ("tensor", "fp32", False), ("tensor", "bf16", True))


class CifarShaped(Dataset):
    """Random uint8 32x32 RGB images read like torchvision's CIFAR10: PIL image, then ``transform``."""

    def __init__(self, size: int, seed: int, transform: Callable | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, size).tolist()
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform else image), self.targets[index]

    def __len__(self) -> int:
        return len(self.targets)


def cifar_shaped_splits(sizes: Sizes) -> DataSplits:
    """Splits built the way ``cifar10`` builds them (same transforms, same augmentation)."""
    train_tf, eval_tf = image_transforms(CIFAR10_MEAN, CIFAR10_STD, CIFAR10_AUGMENT)
    pool = CifarShaped(sizes.train + sizes.val, seed=0)
    test = CifarShaped(sizes.val, seed=1, transform=eval_tf)  # not timed; splits need one
    return splits_from_files("cifar_shaped", pool, test, seed=0, val_fraction=sizes.val / (sizes.train + sizes.val),
                             train_transform=train_tf, eval_transform=eval_tf, num_classes=10, in_channels=3,
                             image_size=32, augmentation=CIFAR10_AUGMENT)


def epoch_times(sizes: Sizes, device: torch.device, num_workers: int) -> list[dict]:
    """One row per (path, masks): seconds to hold the data, median epoch seconds, images/s."""
    splits = cifar_shaped_splits(sizes)
    rows = []
    for loader, precision, channels_last in PATHS:
        hold.cache_clear()  # time reading the data onto the device, not the cache
        start = time.perf_counter()
        train, val, _ = build_loaders(splits, sizes.batch_size, 0, device, loader, num_workers)
        held = time.perf_counter() - start if loader == "tensor" else 0.0
        for with_masks in (False, True):
            seed_everything(0)
            model = build_model("vgg16")
            masks = magnitude_prune(model, 0.99, "layer") if with_masks else None
            result = fine_tune(model, train, val, HPARAMS, 1 + sizes.epochs, device, masks=masks,
                               restore_best=False, precision=precision, channels_last=channels_last)
            seconds = statistics.median(r.seconds for r in result.history[1:])  # after the warm-up epoch
            rows.append({"path": f"{loader}/{precision}" + ("/channels_last" if channels_last else ""),
                         "masks": with_masks, "hold_s": held, "epoch_s": seconds,
                         "images_per_s": (sizes.train + sizes.val) / seconds,
                         "train_loss": result.history[-1].train_loss})
            print(f"{rows[-1]['path']:<28} masks={str(with_masks):<5} epoch {seconds:7.3f} s "
                  f"({rows[-1]['images_per_s']:8.0f} img/s), data held in {held:.2f} s", flush=True)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def acceptance_runs(device: str, names: list[str]) -> list[acceptance.Run]:
    """Each config's accepted-or-not run (see benchmarks/acceptance.py), one after the other."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="safs-acceptance-") as tmp:
        roots = acceptance.write_data(Path(tmp) / "data")
        for name in names:
            run = acceptance.run_config(name, device, roots, Path(tmp) / name, free_port())
            figures = run.figures()
            print(f"{name}: {'ACCEPTED' if run.accepted else 'NOT ACCEPTED'} in {run.wall_s:.0f} s, "
                  f"{figures['trials']} trials on {', '.join(figures['devices'])}, {figures['warm']} warm, "
                  f"{figures['cold']} cold", flush=True)
            if not run.accepted:
                print("\n".join(["problems:", *run.problems, "output (tail):", run.output[-6000:]]), flush=True)
            runs.append(run)
    return runs


def provenance() -> tuple[str, bool]:
    """The checkout's commit and whether its tree is clean (tracked and untracked files)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") or "unknown", not git("status", "--porcelain")


def versions() -> str:
    import nni
    return (f"Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}), NNI {nni.__version__}")


def report(rows: list[dict], runs: list[acceptance.Run], sizes: Sizes, device: torch.device,
           num_workers: int) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    commit, clean = provenance()
    lines = ["# The GPU acceptance run and VGG-16's epoch time (measured by benchmarks/gpu.py)", "",
             f"Commit {commit}{'' if clean else ' with uncommitted changes'}; {name}; {versions()}. "
             f"Command: `{shlex.join(['python', 'benchmarks/gpu.py', *sys.argv[1:]])}`.", ""]
    if runs:
        lines += ["## Acceptance: the shipped configs through nnictl (tiny budgets, two trials at a time)", "",
                  "| config | accepted | trials | devices | warm | cold | start-up warm / cold (s) | "
                  "trial warm / cold (s) | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
        for run in runs:
            f = run.figures()
            lines.append(f"| {run.name} | {'yes' if run.accepted else 'NO: ' + '; '.join(run.problems)} | "
                         f"{f['trials']} | {', '.join(f['devices'])} | {f['warm']} | {f['cold']} | "
                         f"{_seconds(f['warm_startup_s'])} / {_seconds(f['cold_startup_s'])} | "
                         f"{_seconds(f['warm_trial_s'])} / {_seconds(f['cold_trial_s'])} | {run.wall_s:.0f} |")
        lines.append("")
    if rows:
        lines += ["## VGG-16 epoch time", "",
                  f"Batch {sizes.batch_size}, CIFAR-shaped synthetic data through CIFAR-10's input pipeline: "
                  f"{sizes.train} train + {sizes.val} val images per epoch; median of {sizes.epochs} epochs after "
                  f"a warm-up epoch; DataLoader with {num_workers} workers.", "",
                  "| path | masks | epoch (s) | images/s | data held in (s) |", "|---|---|---|---|---|"]
        lines += [f"| {r['path']} | {'yes' if r['masks'] else 'no'} | {r['epoch_s']:.3f} | "
                  f"{r['images_per_s']:.0f} | {r['hold_s']:.2f} |" for r in rows]
        base = next(r["epoch_s"] for r in rows if r["path"].startswith("dataloader") and r["masks"])
        fast = next(r["epoch_s"] for r in rows if r["path"].endswith("channels_last") and r["masks"])
        lines += ["", f"Fast path with masks: {fast:.3f} s per epoch, {base / fast:.1f}x the DataLoader/fp32 "
                  f"path (arithmetic floor ~0.2 s on one H100)."]
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--tiny", action="store_true", help="(b): a few batches instead of an epoch of CIFAR-10")
    parser.add_argument("--parts", default=None, help="comma-separated: acceptance, epoch (default: both on CUDA, "
                                                     "epoch on CPU)")
    parser.add_argument("--configs", default=",".join(acceptance.NAMES),
                        help=f"(a): comma-separated paper configs (default: the GPU ones, {','.join(acceptance.NAMES)}; "
                             "also lenet5_mnist_paper)")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers (vgg16_safs.yml: 4)")
    parser.add_argument("--json", type=Path, help="also write (a)'s runs here, as JSON")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "gpu.md")
    args = parser.parse_args()

    device = resolve_device(args.device)
    parts = set((args.parts or ("acceptance,epoch" if device.type == "cuda" else "epoch")).split(","))
    if not parts <= {"acceptance", "epoch"}:
        raise SystemExit(f"error: unknown --parts {sorted(parts - {'acceptance', 'epoch'})}; valid: acceptance, epoch")
    names = args.configs.split(",")
    if not set(names) <= set(acceptance.PAPER_NAMES):
        raise SystemExit(f"error: unknown --configs {sorted(set(names) - set(acceptance.PAPER_NAMES))}; "
                         f"valid: {', '.join(acceptance.PAPER_NAMES)}")
    sizes = TINY if args.tiny else FULL
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # a smoke run: stay off the other cores (its figures mean little anyway)
    workers = 0 if args.tiny else args.num_workers
    # acceptance first: its experiments' trials must not share the GPU with this process's epochs
    runs = acceptance_runs(str(device), names) if "acceptance" in parts else []
    rows = epoch_times(sizes, device, workers) if "epoch" in parts else []
    if args.json:
        args.json.write_text(json.dumps([{**asdict(run), "figures": run.figures()} for run in runs], indent=2))
    lines = report(rows, runs, sizes, device, workers)
    full = device.type == "cuda" and not args.tiny and parts == {"acceptance", "epoch"} and \
        set(names) >= set(acceptance.NAMES)
    if full and provenance()[1]:
        write_report(lines, args.output)
        print(f"wrote {args.output}")
    else:
        print("\n".join(lines))
        if full:
            print(f"not written to {args.output}: the tree has uncommitted changes (the report names a commit)")
    if not all(run.accepted for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
