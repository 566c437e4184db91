"""What nni-safs' own machinery costs, measured (not asserted) on this machine.

(a) one trial's wall time split into start-up/imports, data, checkpoint load, training,
    evaluation and reporting (a real ``python -m nni_safs.trial`` process, run by hand), its
    start-up against ``python -c "import torch"`` in the same run (target <= 1.3x), data
    loading (target <= 0.1 s) and peak memory; then the same trial started warm;
(b) epoch time of our fine-tuning loop against a plain hand-written PyTorch loop on the same
    pruned model, data and batch size, as a ratio measured in one run (target <= 1.10);
(c) the tuner's time per received result, state saving included, at 50 / 500 / 5,000
    results (target <= 10 ms at 5,000);
(e) a search job (a mixed ACON genome, 1 thread, two processes at once as at trialConcurrency 2)
    with and without ``jobs.keep_freed_memory()``, alternating; the weights must be bit-identical;
(d) with ``--experiment-ref REF``: the embedded default's real nnictl experiment at commit REF
    and at HEAD, alternating (``--experiment-pairs``; this machine's speed drifts by 10-20%
    between runs, so each pair is compared on its own): wall time, trial count, NNI's idle
    time between one trial's end and the next one's start, identical tables.

    python benchmarks/overhead.py                           # (a)-(c), ~2 minutes
    python benchmarks/overhead.py --experiment-ref 8aa1d54  # and (d), ~10 minutes more per pair
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from report import write_report  # benchmarks/report.py (scripts run from this folder)

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE / "workspaces" / "overhead"


def _config(**overrides):
    from nni_safs.settings.config import SafsConfig
    return SafsConfig(**{"model": "lenet5", "dataset": "mnist5k", "workspace": str(WORKSPACE), "device": "cpu",
                         "scope": "lamp", "dense_epochs": 10, "batch_size": 256, **overrides})


def _prepared():
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import prepare
    config = open_workspace(_config())
    prepare(config, log=lambda message: None)
    return config


def trial_split(repeats: int, epochs: int) -> dict[str, float]:
    """Real trial processes (run by hand with ``--params``), each after a ``python -c "import
    torch"`` process, alternating so both see the same machine: medians, and their ratio."""
    config = _prepared()
    params = {"stage": "search", "variant": "lahc", "job": 0, "workspace": config.workspace,
              "genome": "act1=swish;act2=srs;act3=gelu;act4=elu", "hparams": config.hparams,
              "train_scales": False, "epochs": epochs, "data_fraction": 1.0}
    params_file = WORKSPACE / "job.json"
    runs, torch_import = [], []
    for job in range(repeats):  # a fresh job id each time: a finished job would only re-report
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        torch_import.append(time.perf_counter() - start)
        (WORKSPACE / "jobs" / f"{1000 + job}.json").unlink(missing_ok=True)
        params_file.write_text(json.dumps({**params, "job": 1000 + job}))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "nni_safs.trial", "--params", str(params_file)],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        timings = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("timings: "))[9:])
        timings["wall"] = wall
        runs.append(timings)
    split = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in runs[0]}
    split["training (excl. reporting)"] = split["training"] - split["reporting"]
    split["import torch"] = statistics.median(torch_import)
    split["startup_ratio"] = statistics.median(r["startup"] / t for r, t in zip(runs, torch_import))
    split["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    warm = []  # the same trial started warm (nni_safs.integration.forkserver), as NNI's local trials are
    for job in range(2 * repeats + 5):
        (WORKSPACE / "jobs" / f"{2000 + job}.json").unlink(missing_ok=True)
        params_file.write_text(json.dumps({**params, "job": 2000 + job}))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "nni_safs.trial", "--params", str(params_file)],
                             capture_output=True, text=True, check=True, env={**os.environ, "NNI_SAFS_FORKSERVER": "1"})
        if "nni_safs: warm start" not in out.stdout:
            time.sleep(1)  # the first one started the server; it is importing
            continue
        timings = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("timings: "))[9:])
        warm.append({**timings, "wall": time.perf_counter() - start})
        if len(warm) == repeats:
            break
    split["warm startup"] = statistics.median(run["startup"] for run in warm)
    split["warm wall"] = statistics.median(run["wall"] for run in warm)
    return split


def loop_ratio(rounds: int, epochs: int) -> dict[str, float]:
    """Alternate our loop and a plain loop, same model/data/batch; seconds per epoch."""
    import torch
    from torch import nn

    from nni_safs.data import make_loaders
    from nni_safs.training.jobs import load_data, load_pruned
    from nni_safs.training.loop import fine_tune

    config = _prepared()
    splits = load_data(config)
    train, val, _ = make_loaders(splits, config.batch_size, 0, config.seed)
    hparams = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4}

    def ours() -> float:
        model, masks = load_pruned(config, splits)
        start = time.perf_counter()
        fine_tune(model, train, val, hparams, epochs, masks=masks, restore_best=False)
        return (time.perf_counter() - start) / epochs

    def plain() -> float:
        model, _ = load_pruned(config, splits)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
        start = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for images, labels in train:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                sum((model(images).argmax(1) == labels).sum().item() for images, labels in val)
        return (time.perf_counter() - start) / epochs

    ours(), plain()  # warm-up
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(ours())
        theirs.append(plain())
    # the fastest round of each is the one least disturbed by the rest of the machine
    return {"ours_s_per_epoch": min(mine), "plain_s_per_epoch": min(theirs), "ratio": min(mine) / min(theirs),
            "median_ratio": statistics.median(mine) / statistics.median(theirs)}


TUNER_PROBE = r"""
import json, sys, time, psutil
from nni_safs.integration.tuner import SafsTuner
workspace, n, marks = sys.argv[1], int(sys.argv[2]), [int(m) for m in sys.argv[3].split(",")]
process = psutil.Process()
# each new result scores higher than the last, so LAHC keeps walking to genomes it has not measured
# (a genome it proposes again is answered without a job); the steps are more than n results need
tuner = SafsTuner(model="lenet5", dataset="mnist5k", workspace=workspace, search_steps=20 * n,
                  max_search_steps=20 * n, hpo_trials=2)
pending = []
tuner.generate_multiple_parameters([0], st_callback=lambda pid, p: pending.append(p))
rss_start = process.memory_info().rss
times, pid = [], 1
tuner.receive_trial_result(0, "", {"default": 10.0, "job": 0})
while len(times) + 1 < n:
    pending += tuner.generate_multiple_parameters([pid], st_callback=lambda i, p: pending.append(p))
    pid += 1
    if not pending:
        break
    job = pending.pop(0)
    start = time.perf_counter()
    tuner.receive_trial_result(pid, "", {"default": 50 + len(times) / n, "val_acc": 50, "test_acc": 50,
                                         "density": 0.01, "job": job["job"], "stage": job["stage"]})
    times.append(time.perf_counter() - start)
state = tuner._state_path()
print(json.dumps({"results": len(times) + 1, "rss_start_mb": rss_start / 2**20,
                  "rss_end_mb": process.memory_info().rss / 2**20,
                  "state_kb": sum(f.stat().st_size for f in state.parent.glob(state.name + "*")) / 1024,
                  "ms_per_result": {m: 1000 * sum(times[min(m, len(times)) - 50:m]) / 50 for m in marks}}))
"""


def tuner_cost(results: int, marks: list[int]) -> dict:
    """Feed the tuner ``results`` results; the mean time one takes (its state saved) around each mark."""
    with tempfile.TemporaryDirectory(prefix="safs-tuner-") as workspace:
        out = subprocess.run([sys.executable, "-c", TUNER_PROBE, workspace, str(results), ",".join(map(str, marks))],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


ALLOCATOR_PROBE = r"""
import hashlib, json, sys, time, torch
from nni_safs.training import jobs
from nni_safs.storage.workspace import load_config
workspace, keep, epochs = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
if keep:
    jobs.keep_freed_memory()
torch.set_num_threads(1)
config = load_config(workspace)
genome = {"act1": "acon", "act2": "acon", "act3": "symexp", "act4": "acon"}
jobs.load_data(config)
start = time.perf_counter()
outcome = jobs.run_candidate(config, genome, config.hparams, epochs, False, save_as="allocator_probe.pt")
seconds = time.perf_counter() - start
state = torch.load(f"{workspace}/allocator_probe.pt", weights_only=False)["state"]
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
print(json.dumps({"seconds": seconds, "val_acc": outcome["val_acc"], "weights": digest}))
"""


def allocator_effect(rounds: int, epochs: int) -> dict:
    """Pairs of probe processes at once, without then with freed memory kept; seconds per job."""
    config = _prepared()
    seconds: dict[bool, list[float]] = {False: [], True: []}
    digests = set()
    for _ in range(rounds):
        for keep in (False, True):
            probes = [subprocess.Popen([sys.executable, "-c", ALLOCATOR_PROBE, config.workspace, str(int(keep)),
                                        str(epochs)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
            for probe in probes:
                out = json.loads(probe.communicate()[0].strip().splitlines()[-1])
                seconds[keep].append(out["seconds"])
                digests.add(out["weights"])
    without, kept = statistics.median(seconds[False]), statistics.median(seconds[True])
    return {"without_s": without, "kept_s": kept, "saving": 1 - kept / without, "identical": len(digests) == 1}


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """Commit ``ref`` in a temporary git worktree (so edits made meanwhile do not leak in), removed after."""
    repo = HERE.parent
    with tempfile.TemporaryDirectory(prefix="safs-ref-") as tmp:
        code = Path(tmp) / "code"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(code), ref],
                       check=True, capture_output=True)
        # the install maps nni_safs.search_spaces to the main checkout's search_spaces/: give the
        # worktree its own, or an older commit reads today's spaces
        (code / "nni_safs" / "search_spaces").symlink_to(code / "search_spaces")
        try:
            yield code
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(code)], capture_output=True)


def experiment_wall(ref: str, port: int) -> dict:
    """The embedded default through ``safs experiment`` (a real nnictl experiment) at commit ``ref``
    (:func:`checkout`), timed from the first trial's start to the last trial's end: set-up and
    NNI's own start-up are left out."""
    with checkout(ref) as code:
        env = {**os.environ, "PYTHONPATH": str(code), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        out = subprocess.run([sys.executable, "-m", "nni_safs.cli", "experiment",
                              "experiment_configs/lenet5_mnist_safs.yml", "--port", str(port)],
                             cwd=code, env=env, capture_output=True, text=True, timeout=3600)
        trials = _rest(port, "/trial-jobs")
        log = Path(_rest(port, "/experiment")["logDir"]) / "log" / "nnimanager.log"
        # one per job sent after the status read TUNER_NO_MORE_TRIAL while the experiment ran on
        early_ends = log.read_text().count("It is not supposed to receive more trials")
        finals = [json.loads(json.loads(m["data"])) for m in _rest(port, "/metric-data") if m["type"] == "FINAL"]
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop", "--port", str(port)],
                       env=env, capture_output=True)
        table = (code / "workspace" / "lenet5_mnist5k" / "results.md").read_text()
    starts = [t["startTime"] for t in trials if t.get("startTime")]
    ends = [t["endTime"] for t in trials if t.get("endTime")]
    durations = [(t["endTime"] - t["startTime"]) / 1000 for t in trials if t.get("endTime") and t.get("startTime")]
    idle = idle_between_trials(trials)
    return {"ref": ref, "wall_s": (max(ends) - min(starts)) / 1000, "trials": len(trials),
            "idle_s_per_trial": statistics.mean(idle) if idle else 0.0,
            "trial_s": sum(durations), "job_s": sum(f.get("seconds", 0.0) for f in finals),
            "succeeded": sum(t["status"] == "SUCCEEDED" for t in trials), "done": "[DONE]" in out.stdout,
            "early_ends": early_ends,
            "table": table.strip()}


def idle_between_trials(trials: list[dict]) -> list[float]:
    """Seconds each slot stood empty between a trial's end and the start of the trial that took
    the slot next (slots: the concurrent trials, each start taking the latest end before it)."""
    slots: list[int] = []
    idle = []
    for trial in sorted((t for t in trials if t.get("startTime") and t.get("endTime")), key=lambda t: t["startTime"]):
        freed = [end for end in slots if end <= trial["startTime"]]
        if freed:
            slots.remove(max(freed))
            idle.append((trial["startTime"] - max(freed)) / 1000)
        slots.append(trial["endTime"])
    return idle


SHORT = dict(dense_epochs=4, baseline_epochs=2, final_epochs=2, search_epochs=1, hpo_epochs=1, search_steps=3,
             max_search_steps=4, hpo_trials=3)


def inprocess_table(ref: str) -> str:
    """The embedded default with SHORT budgets through ``safs run`` (one job after another, so no
    timing enters the results) at commit ``ref``: its results table, to compare across commits."""
    with checkout(ref) as code, tempfile.TemporaryDirectory(prefix="safs-run-") as tmp:
        import yaml
        class_args = yaml.safe_load((code / "experiment_configs" / "lenet5_mnist_safs.yml").read_text())
        settings = {**class_args["tuner"]["classArgs"], **SHORT, "workspace": str(Path(tmp) / "ws")}
        (Path(tmp) / "short.yml").write_text(yaml.safe_dump(settings))
        subprocess.run([sys.executable, "-m", "nni_safs.cli", "run", str(Path(tmp) / "short.yml"), "--quiet"],
                       cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, check=True, capture_output=True)
        return (Path(tmp) / "ws" / "results.md").read_text().strip()


def _rest(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni{path}", timeout=30) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="trial processes to time (median)")
    parser.add_argument("--rounds", type=int, default=12, help="alternating loop measurements")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--allocator-rounds", type=int, default=4, help="alternating pairs of jobs for (e)")
    parser.add_argument("--results", type=int, default=5000, help="results fed to the tuner for (c)")
    parser.add_argument("--experiment-ref", default=None,
                        help="also run the embedded default's experiment at this git commit and at HEAD (committed "
                             "code only; about 15 minutes), e.g. the commit before a change")
    parser.add_argument("--experiment-pairs", type=int, default=2,
                        help="(d): runs of REF and HEAD, alternating (each pair compared on its own)")
    parser.add_argument("--port", type=int, default=8093, help="NNI port for (d)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "overhead.md")
    args = parser.parse_args()

    split = trial_split(args.repeats, args.epochs)
    ratio = loop_ratio(args.rounds, args.epochs)
    marks = [m for m in (50, 500, 5000) if m <= args.results]
    tuner = tuner_cost(args.results, marks)
    allocator = allocator_effect(args.allocator_rounds, args.epochs)
    lines = ["# Overhead (measured by benchmarks/overhead.py)", "",
             f"Machine: {subprocess.run(['uname', '-srm'], capture_output=True, text=True).stdout.strip()}, "
             f"{os.cpu_count()} CPUs, torch threads default; LeNet-5 / mnist5k, batch 256, {args.epochs} epochs "
             f"per trial. Command: `python benchmarks/overhead.py"
             + (f" --experiment-ref {args.experiment_ref}" if args.experiment_ref else "") + "`.", "",
             "## (a) One trial's wall time (median of %d runs, seconds)" % args.repeats, "",
             "| phase | seconds |", "|---|---|"]
    for key in ("startup", "data", "checkpoint_load", "training (excl. reporting)", "reporting", "evaluation", "wall"):
        lines.append(f"| {key} | {split.get(key, 0.0):.2f} |")
    lines += ["", f"Start-up (interpreter and imports, before any work) against `python -c \"import torch\"` "
              f"({split['import torch']:.2f} s, run before each trial): **{split['startup_ratio']:.2f}x** "
              "(target <= 1.3x; median of the per-pair ratios). Started warm (`NNI_SAFS_FORKSERVER=1`, as "
              "NNI's local trials are by default: a child forked by a server that has imported torch): "
              f"start-up **{split['warm startup']:.2f} s**, wall {split['warm wall']:.2f} s. Data loading "
              f"**{split['data']:.3f} s** (target <= 0.1 s). Trial peak RSS: {split['peak_rss_mb']:.0f} MB.", "",
              "## (b) Our fine-tuning loop vs a plain PyTorch loop (same model, data, batch)", "",
              f"ours {ratio['ours_s_per_epoch']:.3f} s/epoch, plain {ratio['plain_s_per_epoch']:.3f} s/epoch, "
              f"ratio **{ratio['ratio']:.3f}** (target <= 1.10; fastest of {args.rounds} alternating rounds each; "
              f"ratio of the medians {ratio['median_ratio']:.3f}). Both loops validate every epoch; ours "
              "also holds the masks (gradient hooks, re-zeroing after each step, a check per epoch) and "
              "copies the best epoch's weights.", "",
              f"## (c) The tuner's work per result ({tuner['results']} results received)", "",
              "| after results | ms per result (mean of the 50 before) |", "|---|---|"]
    lines += [f"| {mark} | {ms:.2f} |" for mark, ms in tuner["ms_per_result"].items()]
    lines += ["", f"Each includes saving the state (snapshot + journal, synced to disk); saved state "
              f"{tuner['state_kb']:.0f} KB; tuner RSS {tuner['rss_start_mb']:.0f} MB -> {tuner['rss_end_mb']:.0f} MB. "
              "Target: <= 10 ms at 5,000 (before: 5.5 ms at 50, 61 ms at 500).", "",
              "## (e) A search job with freed memory kept (`jobs.keep_freed_memory`, called by every job)", "",
              f"ACON/symexp genome, {args.epochs} epochs, 1 thread, two jobs at once, median of "
              f"{2 * args.allocator_rounds} each: without {allocator['without_s']:.2f} s, kept "
              f"{allocator['kept_s']:.2f} s: **{100 * allocator['saving']:.1f}% less**; weights bit-identical: "
              f"**{allocator['identical']}**."]
    if args.experiment_ref:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        pairs = [(experiment_wall(args.experiment_ref, args.port), experiment_wall(head, args.port))
                 for _ in range(args.experiment_pairs)]
        short = [inprocess_table(args.experiment_ref), inprocess_table(head)]
        gains = [1 - after["wall_s"] / before["wall_s"] for before, after in pairs]
        lines += ["", "## (d) The embedded default's experiment (`safs experiment`, a real nnictl experiment)", "",
                  "Wall time from the first trial's start to the last trial's end (set-up and NNI's start-up "
                  f"left out), same config, {args.experiment_ref} and {head} alternating on this machine; idle: the "
                  "mean time a slot stood empty between one trial's end and the next trial's start.", "",
                  "| pair | code | wall s | trials | succeeded | idle s per trial | trial-seconds | of which in the job "
                  "| NNI warnings of a job after TUNER_NO_MORE_TRIAL |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {i} | {r['ref']} | {r['wall_s']:.0f} | {r['trials']} | {r['succeeded']} | "
                  f"{r['idle_s_per_trial']:.2f} | {r['trial_s']:.0f} | {r['job_s']:.0f} | {r['early_ends']} |"
                  for i, pair in enumerate(pairs, 1) for r in pair]
        tables = {r["table"] for pair in pairs for r in pair}
        lines += ["", "Faster per pair: " + ", ".join(f"**{100 * g:.0f}%**" for g in gains)
                  + f"; all runs together: **{100 * (1 - sum(a['wall_s'] for _, a in pairs) / sum(b['wall_s'] for b, _ in pairs)):.0f}%** "
                  f"(target >= 35%). The {2 * len(pairs)} experiments' tables identical: **{len(tables) == 1}** (at "
                  "trialConcurrency 2 which results a study has seen when it suggests depends on timing, so "
                  "two runs of one commit can differ there); the same config with short budgets run "
                  f"in-process (`safs run`, no timing involved) at both commits: identical "
                  f"**{short[0] == short[1]}**.", ""]
        for i, table in enumerate(sorted(tables, key=lambda t: [r["table"] for p in pairs for r in p].index(t)), 1):
            runs = [f"pair {n} {r['ref']}" for n, pair in enumerate(pairs, 1) for r in pair if r["table"] == table]
            lines += [f"### Table {i} ({', '.join(runs)})", "", table, ""]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
