"""Can a stage-1 score at the search budget pick a better activation at all?

For LeNet-5 / mnist5k / LAMP at 0.99 (the embedded default's workspace settings), fine-tunes
ReLU, every uniform genome of the stage-1 choices and a dozen random mixed genomes, each at the
search budget and at the final budget, with two fine-tuning seeds. Prints, per way of scoring a
candidate (``best``: max validation top-1 over the epochs, the paper's; ``late_mean``: mean of
the later half of the epochs), the Spearman rank correlation between the search-budget score and
the final-budget test accuracy (mean over seeds), the seed-to-seed spread, and the best and
worst genomes.

    python benchmarks/studies/search_signal.py                       # ~15 min on 2 cores
    python benchmarks/studies/search_signal.py --val-fraction 0.2    # a larger validation split
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: report.py, reproduce_lenet5.py
from report import write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCORES = {"best": "val_acc", "late_mean": "late_val_acc"}


def config_for(args: argparse.Namespace):
    from nni_safs.settings.config import SafsConfig
    class_args = dict(yaml.safe_load(args.config.read_text())["tuner"]["classArgs"])
    drop = {"final_seeds", "search_init", "search_score"}  # pipeline knobs this script varies itself
    class_args = {k: v for k, v in class_args.items() if k not in drop}
    return SafsConfig.from_dict({**class_args, "seed": args.seed, "threads": 1, "val_fraction": args.val_fraction,
                                 "workspace": str(args.workspace / f"seed{args.seed}_val{args.val_fraction}")})


def genomes(slot_names: list[str], choices: list[str], n_random: int, seed: int) -> dict[str, dict[str, str]]:
    named = {f"uniform {op}": {slot: op for slot in slot_names} for op in ["relu", *choices]}
    rng = random.Random(seed)
    for i in range(n_random):
        named[f"random {i}"] = {slot: rng.choice(choices) for slot in slot_names}
    return named


def evaluate(task: tuple) -> dict:
    """Fine-tune one genome at one budget with one seed (a worker process)."""
    config, name, genome, epochs, seed = task
    import torch

    from nni_safs.training.jobs import run_candidate
    torch.set_num_threads(1)
    out = run_candidate(config, genome, config.hparams, epochs, train_scales=False, seed=seed)
    return {"genome": name, "epochs": epochs, "seed": seed,
            **{k: out[k] for k in ("val_acc", "late_val_acc", "test_acc", "diverged")}}


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(v):  # average ranks for ties
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    return statistics.correlation(ranks(x), ranks(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiment_configs" / "lenet5_mnist_safs.yml")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (splits, dense model)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--random-genomes", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workspace", type=Path, default=HERE.parent / "workspaces" / "search_signal")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or HERE / "results" / f"search_signal_val{args.val_fraction}.md"

    from nni_safs.models import build_model
    from nni_safs.models.activations import load_op_choices, slots
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import prepare
    start = time.perf_counter()
    config = open_workspace(config_for(args))
    prepare(config, log=print)
    named = genomes(list(slots(build_model(config.model))), load_op_choices(config.op_choices),
                    args.random_genomes, args.seed)
    seeds = [args.seed + 100, args.seed + 101]  # fine-tuning seeds, apart from the run's
    tasks = [(config, name, genome, epochs, seed) for name, genome in named.items()
             for epochs in (config.search_epochs, config.final_epochs) for seed in seeds]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(evaluate, tasks):
            rows.append(row)
            print(json.dumps(row), flush=True)

    def runs(name, epochs):
        return [r for r in rows if r["genome"] == name and r["epochs"] == epochs]

    final_test = {n: statistics.mean(r["test_acc"] for r in runs(n, config.final_epochs)) for n in named}
    lines = ["# Stage-1 signal: does the search-budget score rank genomes like the final budget does?", "",
             f"Measured by `python benchmarks/studies/search_signal.py --seed {args.seed} --val-fraction {args.val_fraction}` "
             f"in {(time.perf_counter() - start) / 60:.0f} min (2 CPU cores). LeNet-5, mnist5k, "
             f"{config.scope} pruning at {config.ratio}, dense hyperparameters, frozen alpha/beta; "
             f"{len(named)} genomes (ReLU, {len(named) - 1 - args.random_genomes} uniform, "
             f"{args.random_genomes} random) x search budget {config.search_epochs} epochs and final budget "
             f"{config.final_epochs} epochs x fine-tuning seeds {seeds}.", "",
             "| score | Spearman (one seed's search score vs final test, mean over seeds) | "
             "Spearman (search score averaged over both seeds) | search score seed spread (mean abs diff) |",
             "|---|---|---|---|"]
    for score, key in SCORES.items():
        per_seed = [spearman([next(r[key] for r in runs(n, config.search_epochs) if r["seed"] == s) for n in named],
                             [final_test[n] for n in named]) for s in seeds]
        averaged = spearman([statistics.mean(r[key] for r in runs(n, config.search_epochs)) for n in named],
                            [final_test[n] for n in named])
        spread = statistics.mean(abs(runs(n, config.search_epochs)[0][key] - runs(n, config.search_epochs)[1][key])
                                 for n in named)
        lines.append(f"| {score} | {statistics.mean(per_seed):.2f} ({', '.join(f'{v:.2f}' for v in per_seed)}) | "
                     f"{averaged:.2f} | {spread:.2f} |")
    # the confirmation (confirm_epochs = final budget): one seed's final-budget score ranks genomes
    # for the other seed's final test, so the ranking is not judged on the runs that made it
    promoted = [spearman([next(r["val_acc"] for r in runs(n, config.final_epochs) if r["seed"] == s) for n in named],
                         [next(r["test_acc"] for r in runs(n, config.final_epochs) if r["seed"] != s) for n in named])
                for s in seeds]
    lines.append(f"| best at the final budget (the confirmation's score), vs the other seed's final test | "
                 f"{statistics.mean(promoted):.2f} ({', '.join(f'{v:.2f}' for v in promoted)}) | - | - |")
    final_spread = statistics.mean(abs(runs(n, config.final_epochs)[0]["test_acc"] -
                                       runs(n, config.final_epochs)[1]["test_acc"]) for n in named)
    lines += ["", f"Final-budget test top-1 seed spread (mean abs diff between the two seeds): {final_spread:.2f}",
              "", "| genome | search best val | search late-mean val | final test (mean of 2 seeds) |",
              "|---|---|---|---|"]
    for name in sorted(named, key=final_test.get, reverse=True):
        search = runs(name, config.search_epochs)
        lines.append(f"| {name} | {statistics.mean(r['val_acc'] for r in search):.2f} | "
                     f"{statistics.mean(r['late_val_acc'] for r in search):.2f} | {final_test[name]:.2f} |")
    best, worst = max(final_test, key=final_test.get), min(final_test, key=final_test.get)
    lines += ["", f"Best genome: {best} {final_test[best]:.2f}; worst: {worst} {final_test[worst]:.2f}; "
              f"ReLU: {final_test['uniform relu']:.2f}.", "",
              "Random genomes: " + "; ".join(f"{n} = {json.dumps(g)}" for n, g in named.items() if n.startswith("random")),
              "", "Per run:", "", "```", *(json.dumps(r) for r in rows), "```"]
    write_report(lines, output)


if __name__ == "__main__":
    main()
