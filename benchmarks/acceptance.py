"""The shipped paper configs through a real NNI experiment, checked trial by trial.

Each config (``experiment_configs/NAME.yml``: model, dataset, pruning scope and ratio,
hyperparameters, search algorithm as shipped) runs through ``safs experiment`` with ``--set``
tiny budgets, on small generated files in the dataset's real on-disk format, NNI's local
training service and ``trialConcurrency: 2``, so trials start warm (``nni_safs.integration.forkserver``)
and two share the device. Accepted when the experiment ends DONE, every trial SUCCEEDED and
reported ``status: ok`` on the asked device (``cpu``, or ``cuda:N``), some trials started warm,
every stage ran, and the summary is complete.

``benchmarks/gpu.py`` runs it on CUDA (the GPU acceptance run) and ``tests/test_shipped_configs.py``
on the CPU. CIFAR-10 files cannot match torchvision's official checksums, so tuner and trials
import a plugin (``benchmarks/fake_data_plugin/``) that makes torchvision accept them.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_safs.data.samples import write_cifar10, write_imagenet16, write_mnist

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "experiment_configs"
PLUGIN_DIR = Path(__file__).resolve().parent / "fake_data_plugin"
NAMES = ("vgg16_safs", "resnet18_safs", "efficientnet_b0_safs")  # the GPU configs
PAPER_NAMES = (*NAMES, "lenet5_mnist_paper")  # every config of a paper row
HPO_TRIALS = 2
MAX_SEARCH_STEPS = 1
# prepare + baseline + search start + LAHC steps + both stage-2 studies + 3 finals (final_seeds 1)
TRIALS = 1 + 1 + 1 + MAX_SEARCH_STEPS + 2 * HPO_TRIALS + 3
TINY = dict(threads=1, num_workers=0, batch_size=50, download=False, val_fraction=0.2,
            dense_epochs=1, baseline_epochs=1, final_epochs=1, final_seeds=1, search_epochs=1,
            search_data_fraction=0.5, search_steps=1, max_search_steps=MAX_SEARCH_STEPS,
            hpo_trials=HPO_TRIALS, hpo_epochs=1, plugins=["safs_accept_fake_cifar10"],
            trialConcurrency=2, maxTrialNumber=TRIALS, maxExperimentDuration="15m")


def write_data(root: Path) -> dict[str, Path]:
    """100 training and 50 test images per dataset; ImageNet16 with labels 1..10."""
    write_mnist(root / "mnist", train=100, test=50)
    write_cifar10(root / "cifar10", per_batch=20, test_ids=range(1000, 1050))
    write_imagenet16(root / "imagenet16", per_batch=10, val_ids=range(1000, 1050), num_classes=10)
    return {"mnist": root / "mnist", "cifar10": root / "cifar10", "imagenet16": root / "imagenet16"}


@dataclass
class Run:
    """What one config's experiment showed through NNI's REST API and its workspace."""

    name: str
    device: str
    returncode: int = -1
    wall_s: float = 0.0
    status: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    trial_statuses: list[str] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)  # the trials' final results
    summary: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems

    def figures(self) -> dict[str, Any]:
        """Trials started warm and cold, and their median start-up and whole-trial seconds."""
        out: dict[str, Any] = {"trials": len(self.finals)}
        for kind, warm in (("warm", True), ("cold", False)):
            runs = [m for m in self.finals if m.get("warm") is warm]
            out[kind] = len(runs)
            startup = [m["timings"]["startup"] for m in runs if "startup" in m.get("timings", {})]
            out[f"{kind}_startup_s"] = statistics.median(startup) if startup else None
            seconds = [m["seconds"] for m in runs if "seconds" in m]  # a failure result has none
            out[f"{kind}_trial_s"] = statistics.median(seconds) if seconds else None
        out["devices"] = sorted({m.get("device", "?") for m in self.finals})
        return out


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni{path}", timeout=10) as reply:
        return json.loads(reply.read().decode())


def run_config(name: str, device: str, data_roots: dict[str, Path], workdir: Path, port: int,
               timeout: float = 900) -> Run:
    """Run ``experiment_configs/{name}.yml`` with tiny budgets on ``device``; check what NNI saw."""
    import yaml

    shipped = yaml.safe_load((CONFIGS / f"{name}.yml").read_text())["tuner"]["classArgs"]
    overrides = {**TINY, "device": device, "data_root": str(data_roots[shipped["dataset"]]),
                 "workspace": str(workdir / "ws")}
    if shipped.get("val_fraction") == 0:  # no held-out split (cross-validation's folds instead): as shipped
        overrides["val_fraction"] = 0
    if shipped["dataset"] == "imagenet16":  # the generated files hold 10 of the 1000 classes
        overrides["dataset_options"] = {**shipped.get("dataset_options", {}), "num_classes": 10}
    home = workdir / "home"
    env = dict(os.environ, HOME=str(home), NNI_CONFIG_DIR=str(home / "nni-config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    command = [sys.executable, "-m", "nni_safs.cli", "experiment", str(CONFIGS / f"{name}.yml"), "--port",
               str(port), "--poll", "2", "--timeout", str(int(timeout)),
               *(f"--set={key}={json.dumps(value)}" for key, value in overrides.items())]
    run = Run(name, device)
    start = time.perf_counter()
    try:
        out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout + 60)
        run.returncode, run.output = out.returncode, out.stdout + out.stderr
        run.wall_s = time.perf_counter() - start
        run.status = _get(port, "/check-status")["status"]
        run.params = _get(port, "/experiment")["params"]
        run.trial_statuses = [t["status"] for t in _get(port, "/trial-jobs")]
        run.finals = [json.loads(json.loads(m["data"])) for m in _get(port, "/metric-data") if m["type"] == "FINAL"]
        summary_file = workdir / "ws" / "summary.json"
        run.summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    except (OSError, subprocess.TimeoutExpired, ValueError) as err:
        run.problems.append(f"{type(err).__name__}: {err}")
    finally:
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", "--all"], env=env,
                       capture_output=True, timeout=120)
        logs = list(home.glob("nni-experiments/*/log/dispatcher.log"))
        if logs:
            run.output += "\n--- dispatcher.log (tail) ---\n" + logs[0].read_text()[-4000:]
    if not run.problems:
        run.problems = check(run, shipped)
    return run


def check(run: Run, shipped: dict[str, Any]) -> list[str]:
    """What is wrong with a finished run (empty: accepted)."""
    problems = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    expect(run.returncode == 0, f"safs experiment exited {run.returncode}")
    expect(run.status == "DONE", f"the experiment ended {run.status!r}, not DONE")
    expect(run.trial_statuses == ["SUCCEEDED"] * len(run.trial_statuses) and run.trial_statuses,
           f"trial statuses {run.trial_statuses}")
    expect(run.params.get("maxTrialNumber") == len(run.trial_statuses),
           f"maxTrialNumber {run.params.get('maxTrialNumber')} for {len(run.trial_statuses)} trials")
    expect(run.params.get("trialConcurrency") == 2, f"trialConcurrency {run.params.get('trialConcurrency')}")
    stages = sorted(m.get("stage", "?") for m in run.finals)
    searches = stages.count("search")
    expect(stages == sorted(["prepare", "baseline", *["hpo"] * 2 * HPO_TRIALS, *["final"] * 3,
                             *["search"] * searches]) and 2 <= searches <= 1 + MAX_SEARCH_STEPS,
           f"stages of the final results {stages}")
    expect(all(m.get("status") == "ok" for m in run.finals),
           f"job statuses {[(m.get('stage'), m.get('status'), m.get('reason')) for m in run.finals]}")
    on_device = (lambda d: d == "cpu") if run.device == "cpu" else (lambda d: str(d).startswith("cuda"))
    expect(all(on_device(m.get("device")) for m in run.finals),
           f"devices {sorted({str(m.get('device')) for m in run.finals})}, asked for {run.device}")
    warm = sum(m.get("warm") is True for m in run.finals)
    expect(warm >= 1, f"no trial started warm ({len(run.finals)} trials)")
    summary = run.summary
    expect(bool(summary.get("finished")) and not summary.get("failure"),
           f"summary finished={summary.get('finished')} failure={summary.get('failure')!r}")
    config = summary.get("config", {})
    expect({k: config.get(k) for k in ("model", "dataset", "scope", "ratio")}
           == {k: shipped[k] for k in ("model", "dataset", "scope", "ratio")}, "the summary's config is not the shipped one")
    expect(set(summary.get("columns", {})) == {"dense", "baseline", "stage1", "stage2", "safs"},
           f"summary columns {sorted(summary.get('columns', {}))}")
    expect(sum(w["warm"] for w in summary.get("where", {}).values()) == warm,
           "summary.json's per-stage warm count disagrees with the trials'")
    expect(f"| {shipped['model']} ({shipped['dataset']}) |" in run.output, "no results table printed")
    return problems
