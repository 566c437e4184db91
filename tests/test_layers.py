"""The folder tree is the architecture: each layer imports only the layers below it, and the
method and the settings import neither torch nor nni. Checked on the source (every import
statement, those inside functions too), so a lazy import cannot hide an upward one."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_safs"
# bottom to top; a layer is one or more packages/modules of nni_safs, free to import each other
LAYERS = [
    ("settings", ("settings",)),
    ("method", ("method",)),
    ("borrowed insides", ("borrowed",)),
    ("storage", ("storage",)),
    ("networks", ("data", "pruning", "models", "training", "activations")),
    ("reports", ("reports",)),
    ("NNI integration", ("integration", "tuner", "trial", "manager_host")),
    ("application", ("runner", "overrides", "progress", "cli")),
]
NO_TORCH_NO_NNI = ("settings", "method")
HEAVY = ("torch", "torchvision", "nni")


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at ``path`` (module ``module``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "nni_safs":
        return None
    if len(parts) == 1:
        return -1  # the package itself (its version): below everything
    return next((i for i, (_, names) in enumerate(LAYERS) if parts[1] in names), None)


def violations(package: Path) -> list[str]:
    """Every upward import, and every torch/nni import of the pure layers, as ``file:line: what``."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(("nni_safs", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        own = layer_of(module)
        if own is None or (own == -1 and path.name != "__init__.py"):
            problems.append(f"{path.relative_to(package)}: in no layer")
            continue
        for line, target in imports_of(path, module):
            where = f"{path.relative_to(package)}:{line}"
            other = layer_of(target)
            if other is not None and other > own:
                problems.append(f"{where}: the {LAYERS[own][0] if own >= 0 else 'package'} layer imports {target}, of the {LAYERS[other][0]} "
                                "layer above it")
            if module.split(".")[1] in NO_TORCH_NO_NNI and target.split(".")[0] in HEAVY:
                problems.append(f"{where}: {module} imports {target}")
    return problems


def test_imports_only_point_down():
    assert violations(PACKAGE) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: a copy of the package with one upward and one heavy import fails it."""
    import shutil
    copy = tmp_path / "nni_safs"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    pipeline = copy / "method" / "pipeline.py"
    pipeline.write_text(pipeline.read_text() + "\nfrom nni_safs.training.jobs import run_job\n")
    spaces = copy / "method" / "spaces.py"
    spaces.write_text(spaces.read_text() + "\ndef lazy():\n    import nni.mutable\n")
    state = copy / "method" / "state.py"
    state.write_text(state.read_text() + "\ndef lazy():\n    from ..integration import tuner\n")
    problems = violations(copy)
    assert len(problems) == 3, problems
    assert any("method/pipeline.py" in p and "imports nni_safs.training.jobs.run_job, of the networks layer" in p
               for p in problems)
    assert any("method/spaces.py" in p and "imports nni.mutable" in p for p in problems)
    assert any("method/state.py" in p and "nni_safs.integration.tuner" in p for p in problems)


@pytest.mark.parametrize("path, name", [
    ("nni_safs.tuner", "SafsTuner"),
    ("nni_safs.trial", "main"),
    ("nni_safs.pruning", "LAMPPruner"),
    ("nni_safs.pruning", "magnitude_prune"),
    ("nni_safs.pruning", "MaskHolder"),
    ("nni_safs.data", "register_dataset"),
    ("nni_safs.data", "build_dataset"),
    ("nni_safs.data", "DatasetNotFoundError"),
    ("nni_safs.data.splits", "DataSplits"),
    ("nni_safs.data.splits", "splits_from_files"),
    ("nni_safs.models", "register_model"),
    ("nni_safs.models", "build_model"),
    ("nni_safs.activations", "register_op"),
    ("nni_safs.activations", "ActivationSlot"),
    ("nni_safs.cli", "main"),
])
def test_public_names_stay(path, name):
    assert callable(getattr(importlib.import_module(path), name))


def test_the_commands_and_the_cli_verbs_stay():
    import subprocess
    import sys

    from nni_safs.cli import build_parser
    trial = subprocess.run([sys.executable, "-m", "nni_safs.trial", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert trial.returncode == 0 and "usage: python -m nni_safs.trial" in trial.stdout
    host = subprocess.run([sys.executable, "-m", "nni_safs.manager_host"], capture_output=True, text=True, timeout=120)
    assert host.returncode == 0 and "export NNI_SAFS_LISTEN_HOST=127.0.0.1" in host.stdout
    verbs = build_parser()._subparsers._group_actions[0].choices
    assert set(verbs) == {"experiment", "run", "results", "export", "plot", "report", "compare"}


def test_tests_and_benchmarks_never_import_each_other():
    """Tests check behaviour, benchmarks measure it: neither imports the other's modules or puts
    the other's folder on sys.path (they share only the package)."""
    repo = PACKAGE.parent
    stems = {folder: {p.stem for p in (repo / folder).rglob("*.py")} for folder in ("tests", "benchmarks")}
    crossings = []
    for folder, other in (("tests", "benchmarks"), ("benchmarks", "tests")):
        for path in sorted((repo / folder).rglob("*.py")):
            names = {name.split(".")[0] for _, name in imports_of(path, path.stem)}
            crossings += [f"{path.relative_to(repo)} imports {name}" for name in sorted(names & stems[other])]
            crossings += [f"{path.relative_to(repo)}:{n} {line.strip()}" for n, line in
                          enumerate(path.read_text().splitlines(), 1) if "sys.path" in line and f'"{other}"' in line]
    assert crossings == []
