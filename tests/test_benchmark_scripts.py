"""Every benchmark script starts from any folder: its imports resolve (a moved helper module once
left `benchmarks/stage1_algorithms.py` unable to import `workspace_runs`)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(path for path in BENCHMARKS.rglob("*.py") if "__main__" in path.read_text()
                 and ("argparse" in path.read_text() or "arguments(" in path.read_text()))


def test_the_scripts_with_a_command_line_are_found():
    assert {"reproduce_lenet5.py", "stage1_algorithms.py", "stage2_space.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_a_benchmark_script_answers_help_from_another_folder(script, tmp_path):
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:")
