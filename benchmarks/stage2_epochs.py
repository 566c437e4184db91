"""What stage 2 costs in epochs with and without ``hpo_promotion: asha``, computed from the configs.

No training: for each shipped config (``experiment_configs/*.yml``) and the keys' defaults, today's
stage-2 epochs (two studies of ``hpo_trials`` x ``hpo_epochs``) against the promoted ladders of
the settings proposed in docs/multi_fidelity.md: the count synchronous successive halving makes
(every rung keeps exactly its top 1/factor), the mean and largest of the asynchronous ladder
(:class:`nni_safs.method.asha.Ladder`, the rule the studies run) over ``--orders`` random
arrival orders at the config's ``trialConcurrency`` with random scores, and the bound (every set
at every rung). Run: ``python benchmarks/stage2_epochs.py`` (seconds).
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import yaml

from nni_safs.method.asha import Ladder, rung_epochs
from nni_safs.settings.config import SafsConfig

REPO = Path(__file__).resolve().parents[1]
# docs/multi_fidelity.md's proposals: the embedded default's top rung at its final budget (30);
# the paper configs' at today's hpo_epochs, or at their final budget (200)
PROPOSALS = {
    "embedded, top rung final_epochs": dict(hpo_trials=9, hpo_epochs=30, hpo_min_epochs=3, hpo_reduction_factor=3),
    "embedded, about today's epochs": dict(hpo_trials=9, hpo_epochs=20, hpo_min_epochs=2, hpo_reduction_factor=3),
    "paper, top rung hpo_epochs": dict(hpo_trials=20, hpo_epochs=80, hpo_min_epochs=3, hpo_reduction_factor=3),
    "paper, top rung final_epochs": dict(hpo_trials=20, hpo_epochs=200, hpo_min_epochs=8, hpo_reduction_factor=3),
}


class _RandomLadder(Ladder):
    """A ladder over ``n`` points whose quality is a random number."""

    def __init__(self, n: int, rungs: tuple[int, ...], factor: int, rng: random.Random) -> None:
        super().__init__(rungs, factor)
        self.n, self.rng = n, rng

    @property
    def starts(self) -> int:
        return self.n

    def _new_point(self) -> dict:
        return {"quality": self.rng.random()}


def ladder_epochs(n: int, rungs: tuple[int, ...], factor: int, concurrency: int, seed: int) -> int:
    """One study's epochs on the ladder, results arriving in a random order (scores: quality,
    rung and noise, so a rung's ranking is not the one below's)."""
    rng = random.Random(seed)
    ladder, running = _RandomLadder(n, rungs, factor, rng), []
    while not ladder.finished:
        while len(running) < concurrency and (candidate := ladder.ask()) is not None:
            running.append(candidate)
        done = running.pop(rng.randrange(len(running)))
        ladder.tell(done.id, 50 + 10 * done.genome["quality"] + ladder.rung_of(done.id) + rng.gauss(0, 2))
    return sum(entry["epochs"] for entry in ladder.trace)


def synchronous_epochs(n: int, rungs: tuple[int, ...], factor: int) -> int:
    total = 0
    for epochs in rungs:
        total, n = total + n * epochs, n // factor
    return total


def rows(name: str, settings: dict, concurrency: int, orders: int) -> list[str]:
    """One row per proposal that fits the config (the embedded ones where the final budget is 30)."""
    config = SafsConfig(**settings)
    today = 2 * config.hpo_trials * config.hpo_epochs
    found = []
    for proposal, keys in PROPOSALS.items():
        if proposal.startswith("embedded") != (config.final_epochs == 30):
            continue
        rungs = rung_epochs(keys["hpo_min_epochs"], keys["hpo_epochs"], keys["hpo_reduction_factor"])
        factor = keys["hpo_reduction_factor"]
        runs = [2 * ladder_epochs(keys["hpo_trials"], rungs, factor, concurrency, seed) for seed in range(orders)]
        sync, mean = 2 * synchronous_epochs(keys["hpo_trials"], rungs, factor), statistics.mean(runs)
        found.append(f"| {name} | {concurrency} | {config.hpo_trials} x {config.hpo_epochs}: {today:,} | {proposal}: "
                     f"{keys['hpo_trials']} sets, rungs {'/'.join(map(str, rungs))} | {sync:,} ({sync / today:.2f}) | "
                     f"{mean:,.0f} ({mean / today:.2f}), {max(runs):,} | {2 * keys['hpo_trials'] * sum(rungs):,} |")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200, help="random arrival orders per ladder")
    args = parser.parse_args()
    print("| config | trialConcurrency | stage 2 today: per study, both | hpo_promotion: asha | synchronous (share "
          "of today's) | asynchronous: mean (share), largest | bound |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows("keys' defaults", {}, 1, args.orders)))
    for path in sorted((REPO / "experiment_configs").glob("*.yml")):
        for document in yaml.safe_load_all(path.read_text()):
            tuner = (document or {}).get("tuner") or {}
            if "classArgs" in tuner:
                settings = {k: v for k, v in tuner["classArgs"].items() if k in SafsConfig.defaults()}
                print("\n".join(rows(f"`{path.name}`", settings, document.get("trialConcurrency", 1), args.orders)))


if __name__ == "__main__":
    main()
