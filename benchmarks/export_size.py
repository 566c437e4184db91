"""What `safs export --model` gives a user, measured: file size and CPU inference time.

LeNet-5 at ratio 0.99 (LAMP) from a real workspace (prepared here on mnist5k, then the SAFS
final job with a mixed genome and trained scales; or ``--workspace`` of a finished run), and
VGG-16 (CIFAR form) pruned at 0.99 straight from initialisation: size and speed do not depend
on training, and it shows what the format does for a large network. For each: the exported
file against the dense checkpoint and the plain dense ``state_dict``; the exported model
(``torch.export.load(...).module()``) against the eager nni_safs model, per batch, fastest of alternating
rounds (the machine is shared: the fastest round is the least disturbed one); whether the
logits are identical.

    python benchmarks/export_size.py      # writes benchmarks/results/export_size.md
"""
from __future__ import annotations

import argparse
import io
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from report import write_report  # benchmarks/report.py (scripts run from this folder)

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE / "workspaces" / "export_size"
GENOME = "act1=acon;act2=srs;act3=tanhsoft;act4=symexp"


def lenet_workspace() -> Path:
    """The LeNet-5 workspace with a SAFS final model (kept between runs)."""
    from nni_safs.method.contract import SAFS, JobSpec, Stage
    from nni_safs.settings.config import SafsConfig
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import run_job
    config = open_workspace(SafsConfig(model="lenet5", dataset="mnist5k", device="cpu", scope="lamp", ratio=0.99,
                                       dense_epochs=10, batch_size=256, workspace=str(WORKSPACE)))
    if not (WORKSPACE / "final_safs.pt").is_file():
        run_job(JobSpec(0, Stage.PREPARE, "", str(WORKSPACE)))
        run_job(JobSpec(1, Stage.FINAL, SAFS, str(WORKSPACE), genome=GENOME, hparams=config.hparams, epochs=5,
                        train_scales=True))
    return WORKSPACE


def measure_lenet(workspace: Path, rounds: int) -> dict:
    from nni_safs.reports.export import export_model
    from nni_safs.training.jobs import load_kept_model
    model, checkpoint, splits = load_kept_model(workspace, "safs")
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(workspace, Path(tmp) / "lenet5_safs.pt")
        data = exported.read_bytes()
    images = torch.stack([splits.test[i][0] for i in range(len(splits.test))])
    return {"name": "LeNet-5, mnist5k (trained)", "masks": checkpoint["masks"],
            "checkpoint_bytes": (workspace / "final_safs.pt").stat().st_size,
            **compare(model.eval(), data, images, (1, 256), rounds)}


def measure_vgg(rounds: int) -> dict:
    from nni_safs.models import build_model
    from nni_safs.pruning import magnitude_prune
    from nni_safs.reports.export import to_exported_program
    torch.manual_seed(0)
    model = build_model("vgg16", num_classes=10, in_channels=3, image_size=32)
    masks = magnitude_prune(model, 0.99, "lamp")
    images = torch.randn(64, 3, 32, 32)
    data = to_exported_program(model.eval(), masks, images[:2], {})
    return {"name": "VGG-16, CIFAR shape (untrained)", "masks": masks, "checkpoint_bytes": None,
            **compare(model, data, images, (1, 64), rounds)}


def compare(model: torch.nn.Module, data: bytes, images: torch.Tensor, batches: tuple[int, ...],
            rounds: int) -> dict:
    """Sizes, load time, identical logits and per-batch inference time, eager vs exported."""
    dense = io.BytesIO()
    torch.save(model.state_dict(), dense)
    start = time.perf_counter()
    loaded = torch.export.load(io.BytesIO(data)).module()
    load_seconds = time.perf_counter() - start
    times: dict[int, dict[str, float]] = {}
    with torch.no_grad():
        identical = torch.equal(loaded(images), model(images))
        for batch in batches:
            x = images[:batch]
            for run in (model, loaded, loaded):  # warm-up
                run(x)
            best = {"eager": float("inf"), "exported": float("inf")}
            for _ in range(rounds):
                for key, run in (("eager", model), ("exported", loaded)):
                    start = time.perf_counter()
                    run(x)
                    best[key] = min(best[key], time.perf_counter() - start)
            times[batch] = best
    return {"exported_bytes": len(data), "state_bytes": dense.getbuffer().nbytes, "load_seconds": load_seconds,
            "identical": identical, "times": times}


def report_lines(rows: list[dict], rounds: int) -> list[str]:
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    lines = ["# `safs export --model`: size and CPU inference time (measured by benchmarks/export_size.py)", "",
             f"Machine: {machine}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
             "ratio 0.99, LAMP allocation.", "",
             "| model | kept weights | exported file | dense checkpoint (final_safs.pt) | dense state_dict | "
             "smaller than the checkpoint / the state_dict | identical logits |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        kept = sum(int(mask.count_nonzero()) for mask in row["masks"].values())
        total = sum(mask.numel() for mask in row["masks"].values())
        checkpoint, ratio = "-", "-"
        if row["checkpoint_bytes"]:
            checkpoint = f"{row['checkpoint_bytes'] / 1024:.1f} KiB"
            ratio = f"{row['checkpoint_bytes'] / row['exported_bytes']:.1f}x"
        lines.append(f"| {row['name']} | {kept:,} of {total:,} | {row['exported_bytes'] / 1024:.1f} KiB | "
                     f"{checkpoint} | {row['state_bytes'] / 1024:.1f} KiB | "
                     f"{ratio} / {row['state_bytes'] / row['exported_bytes']:.1f}x | {row['identical']} |")
    lines += ["", f"Inference (forward pass, no grad), fastest of {rounds} alternating rounds:", "",
              "| model | batch | eager nni_safs model | exported (torch.export) | exported / eager |",
              "|---|---|---|---|---|"]
    for row in rows:
        for batch, best in row["times"].items():
            lines.append(f"| {row['name']} | {batch} | {1e3 * best['eager']:.2f} ms | "
                         f"{1e3 * best['exported']:.2f} ms | {best['exported'] / best['eager']:.2f} |")
    lines += ["", "torch.export.load(...).module(): " + ", ".join(
        f"{row['name']} {1e3 * row['load_seconds']:.0f} ms" for row in rows) + ".", "",
              "The exported model runs the same dense kernels as the eager one; before them it rebuilds the "
              "dense weights from the kept ones at every call (one scatter into zeros)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="a finished LeNet-5 workspace (default: prepare one here)")
    parser.add_argument("--rounds", type=int, default=30, help="alternating timing rounds per batch size")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "export_size.md")
    args = parser.parse_args()
    rows = [measure_lenet(args.workspace or lenet_workspace(), args.rounds), measure_vgg(args.rounds)]
    write_report(report_lines(rows, args.rounds), args.output)


if __name__ == "__main__":
    main()
