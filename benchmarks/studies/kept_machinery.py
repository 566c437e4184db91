"""Does each piece of machinery nni-safs keeps beside a library's own pay for itself? Measured here.

(1) ``trial_channel.HttpChannel`` beside NNI's trial API: what ``import nni`` adds to a trial
    process that has already imported what a warm trial has (``nni_safs.training.jobs``: torch, models,
    training). NNI reads its trial environment when imported (``nni.runtime.env_vars``), so a
    forkserver cannot import nni ahead of the trials it forks: every trial would pay this.
(2) ``ActivationSlot``'s unit-scale check, cached on the scales' versions, against comparing the
    scales with 1 at every forward: per check, and per LeNet-5 training step (batch 256, frozen
    scales as in stage 1), alternating. On CUDA each uncached comparison is also a device sync.
(3) ``jobs.keep_freed_memory`` (``mallopt``): ``overhead.py`` section (e).

    cd benchmarks && python kept_machinery.py    # ~1 minute; writes results/kept_machinery.md
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: report.py, reproduce_lenet5.py
from report import write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
IMPORT_NNI = ("import time, nni_safs.training.jobs, nni_safs.trial\n"
              "start = time.perf_counter(); import nni, nni.trial\n"
              "print(time.perf_counter() - start)")


def import_nni_seconds(runs: int = 5) -> list[float]:
    return [float(subprocess.run([sys.executable, "-c", IMPORT_NNI], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(runs)]


def scale_check() -> dict[str, float]:
    import torch

    from nni_safs.models import build_model
    from nni_safs.models.activations import ActivationSlot, slots

    torch.manual_seed(0)
    model = build_model("lenet5_padded")
    images, labels = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for slot in slots(model).values():
        slot.alpha.requires_grad_(False)
        slot.beta.requires_grad_(False)

    def uncached(self: ActivationSlot) -> bool:
        alpha, beta = self.alpha, self.beta
        return not (alpha.requires_grad or beta.requires_grad) and bool(alpha == 1) and bool(beta == 1)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    cached = ActivationSlot._unit_scales
    steps: dict[str, list[float]] = {"cached": [], "uncached": []}
    try:
        for _ in range(6):
            for name, check in (("cached", cached), ("uncached", uncached)):
                ActivationSlot._unit_scales = check
                for _ in range(3):
                    step()
                start = time.perf_counter()
                for _ in range(40):
                    step()
                steps[name].append((time.perf_counter() - start) / 40 * 1e3)
    finally:
        ActivationSlot._unit_scales = cached
    slot = next(iter(slots(model).values()))
    checks = {}
    for name, check in (("cached", cached), ("uncached", uncached)):
        start = time.perf_counter()
        for _ in range(10_000):
            check(slot)
        checks[name] = (time.perf_counter() - start) / 10_000 * 1e6
    return {"slots": len(slots(model)), **{f"{k}_step_ms": statistics.median(v) for k, v in steps.items()},
            **{f"{k}_check_us": v for k, v in checks.items()}}


def main() -> None:
    imports = import_nni_seconds()
    scales = scale_check()
    per_step_us = (scales["uncached_check_us"] - scales["cached_check_us"]) * scales["slots"]
    write_report([
        "# Machinery kept beside a library's own, measured",
        "",
        f"`cd benchmarks && python kept_machinery.py` ({sys.platform}, Python {sys.version.split()[0]})",
        "",
        "## (1) `import nni` in a process that has imported `nni_safs.training.jobs` (a warm trial's state)",
        f"- {', '.join(f'{s:.2f}' for s in imports)} s (median {statistics.median(imports):.2f} s) per trial,"
        " which the HTTP channel saves every trial (70 in the embedded default)",
        "",
        "## (2) The unit-scale check of `ActivationSlot`",
        f"- per check: cached {scales['cached_check_us']:.1f} us, uncached {scales['uncached_check_us']:.1f} us;"
        f" {per_step_us:.0f} us per LeNet-5 step ({scales['slots']} slots)",
        f"- LeNet-5 step, batch 256, alternating (median of 6 x 40): cached {scales['cached_step_ms']:.2f} ms,"
        f" uncached {scales['uncached_step_ms']:.2f} ms",
        "- on the CPU this is within noise; on CUDA each uncached check is a device sync per slot and"
        " forward (not measured here: no GPU)",
    ], HERE / "results" / "kept_machinery.md")


if __name__ == "__main__":
    main()
