"""The acceptance report's figures still come out when a trial reported a failure result (no timings)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from acceptance import Run  # noqa: E402


def test_figures_skip_a_failure_result_without_seconds():
    run = Run("vgg16_safs", "cpu", finals=[
        {"warm": True, "seconds": 4.0, "timings": {"startup": 0.5}, "device": "cpu"},
        {"warm": True, "seconds": 6.0, "timings": {"startup": 1.5}, "device": "cpu"},
        {"warm": False, "status": "failed", "default": 0.0},  # a failure result: no seconds, no device
    ])
    figures = run.figures()
    assert (figures["trials"], figures["warm"], figures["cold"]) == (3, 2, 1)
    assert (figures["warm_trial_s"], figures["warm_startup_s"]) == (5.0, 1.0)
    assert figures["cold_trial_s"] is None and figures["devices"] == ["?", "cpu"]
