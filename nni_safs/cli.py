"""``safs``: what NNI's own ``nnictl`` does not do for a SAFS run.

Verbs:
  experiment CONFIG.yml   start the NNI experiment (nnictl create; the manager on 127.0.0.1 unless
                          --expose), follow it, print the table
  run CONFIG.yml          the same pipeline in this process, without the NNI manager
  results WORKSPACE       print the results table (``--json`` for the summary)
  export WORKSPACE -o F   write the found activations as a self-contained Python module
                          (--model: the pruned network itself, a torch-only torch.export file)
  plot WORKSPACE -o DIR   draw activation curves, layer sparsity and the search trace
  report WORKSPACE        write the run on one self-contained HTML page (WORKSPACE/report.html)
  compare WORKSPACE...    finished runs side by side, grouped by a setting (--by KEY), with
                          95% intervals and differences paired by seed

CONFIG is an NNI experiment YAML (its ``tuner.classArgs`` are used) or a YAML of classArgs;
``--set KEY=VALUE`` (experiment, run) changes a key without editing the file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from nni_safs.overrides import EXPERIMENT_FIELDS, apply_overrides
from nni_safs.progress import ProgressLine
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.journal import StateLockedError
from nni_safs.storage.workspace import RESULTS_FILE, SUMMARY_FILE


def read_config(path: str | Path, overrides: Sequence[str] = (), experiment: bool = False) -> dict[str, Any]:
    """The content of a config file with ``--set`` overrides applied (see :mod:`nni_safs.overrides`);
    ``experiment``: NNI experiment fields may be overridden too."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"error: config file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise SystemExit(f"error: {file} does not parse as YAML: {err}")
    try:
        return apply_overrides(data, overrides, experiment)
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[SafsConfig, Path]:
    """(settings, the directory a relative workspace is resolved against).

    For an NNI experiment YAML that is the tuner's ``codeDirectory``, else the
    ``trialCodeDirectory`` (as the tuner itself resolves it), so ``safs run`` and
    ``nnictl create`` on one file share a workspace.
    """
    return settings_of(path, read_config(path, overrides), overrides)


def settings_of(path: str | Path, data: dict[str, Any], overrides: Sequence[str] = ()) -> tuple[SafsConfig, Path]:
    """:func:`load_run_config` on content already read (and overridden) from ``path``."""
    file = Path(path)
    if "tuner" in data:
        tuner = data["tuner"] or {}
        base = (file.parent / (tuner.get("codeDirectory") or data.get("trialCodeDirectory") or ".")).resolve()
        class_args = tuner.get("classArgs") or {}
    else:
        base, class_args = Path.cwd(), data
    if str(base) not in sys.path:  # plugins beside the experiment, as the tuner and trials see them
        sys.path.append(str(base))
    try:
        return SafsConfig.from_dict(class_args), base
    except ValueError as err:
        where = f"{file} with " + " ".join(f"--set {o}" for o in overrides) if overrides else str(file)
        raise SystemExit(f"error: {where}: {err}")


def cmd_run(args: argparse.Namespace) -> int:
    """safs run: the pipeline in-process, sequentially, then the results table."""
    from nni_safs.runner import run_pipeline
    config, base = load_run_config(args.config, args.set)
    print(run_pipeline(config, base, progress=not args.quiet))
    return _exit_code(Path(config.workspace))


NNICTL = [sys.executable, "-m", "nni.tools.nnictl.nnictl"]


def _get(port: int, path: str) -> Any:
    from nni.experiment import rest  # NNI's own REST client, as the tuner's ManagerClient
    return rest.get(port, path)


def _nnictl(*args: str, host: str | None = None) -> subprocess.CompletedProcess:
    """Run nnictl from this venv; a manager it starts listens on ``host`` (None: every interface)."""
    from nni_safs_loopback import manager_env
    env = manager_env(host)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run([*NNICTL, *args], env=env, capture_output=True, text=True)


def _check_port_free(port: int) -> None:
    """Refuse a port something already listens on (NNI's own check ends in a traceback)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise ValueError(f"port {port} is in use (the portal of an earlier experiment? `nnictl experiment "
                             "list` shows it and `nnictl stop ID` ends it); or choose another port: --port P "
                             "(make run PORT=P)")


def start_experiment(config_file: str | Path, port: int, host: str | None) -> str:
    """``nnictl create`` with the manager listening on ``host`` (None: every interface); the id."""
    created = _nnictl("create", "--config", str(config_file), "--port", str(port), host=host)
    # nnictl lists a URL per interface whatever the manager listens on: print ours instead
    print("\n".join(line for line in created.stdout.strip().splitlines() if "http://" not in line))
    if created.returncode != 0:
        print(created.stderr.strip(), file=sys.stderr)
        raise SystemExit(f"error: nnictl create failed (exit code {created.returncode})")
    return _get(port, "/experiment")["id"]


@contextmanager
def _config_file(original: Path, data: dict[str, Any] | None) -> Iterator[Path]:
    """The file to give ``nnictl create``: ``original``, or ``data`` (its content, overridden)
    written beside it, so NNI resolves its relative paths exactly as the original's; removed
    once the manager has read it."""
    if data is None:
        yield original
        return
    fd, name = tempfile.mkstemp(prefix=f".{original.stem}.", suffix=".set.yml", dir=original.parent)
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        yield Path(name)
    finally:
        os.unlink(name)


def cmd_experiment(args: argparse.Namespace) -> int:
    """safs experiment: the config as an NNI experiment (manager on loopback unless exposed), then the table."""
    from nni_safs.integration.manager_host import remote_reach_problem, tunnel_hint
    from nni_safs.integration.pipelines import build_pipeline
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.loop import resolve_device
    from nni_safs_loopback import LOOPBACK
    data = read_config(args.config, args.set, experiment=True)
    config, base = settings_of(args.config, data, args.set)
    host = None if args.expose else LOOPBACK
    problem = remote_reach_problem(data, host)
    if problem:
        raise ValueError(problem)
    existing = _existing_run(config, base)
    if existing is not None:  # before NNI starts: a workspace is one run's record
        message, code = existing
        print(message, file=sys.stderr if code else sys.stdout)
        return code
    resolve_device(config.device)  # `cuda` where there is none: refused before NNI starts
    _check_port_free(args.port)
    build_pipeline(open_workspace(config, base))  # bad names, paths, files, a workspace of another run
    if host is None:
        print("warning: --expose: the NNI manager listens on every interface, and its REST API has no "
              "authentication (anyone who reaches this machine can stop trials and read logs)", file=sys.stderr)
    with _config_file(Path(args.config), data if args.set else None) as config_file:
        experiment_id = start_experiment(config_file, args.port, host)
    print(f"web portal: http://{host or LOOPBACK}:{args.port}  (experiment {experiment_id})", flush=True)
    if host == LOOPBACK:
        print(f"the manager listens on 127.0.0.1 only; from another machine: {tunnel_hint(args.port)}", flush=True)
    status = ""
    line = ProgressLine("trials")
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            status = _get(args.port, "/check-status")["status"]
            _show_trials(line, status, _get(args.port, "/trial-jobs"),
                         _get(args.port, "/experiment")["params"].get("maxTrialNumber"), data.get("maxTrialNumber"))
            if status in ("DONE", "ERROR", "STOPPED"):
                break
            time.sleep(args.poll)
    finally:
        line.close()
    workspace = Path(config.workspace)
    if (workspace / RESULTS_FILE).exists():
        print((workspace / RESULTS_FILE).read_text())
    if args.stop or status != "DONE":
        _nnictl("stop", experiment_id)
        print(f"experiment {experiment_id} stopped ({status or 'no status'})")
    else:
        print(f"the portal stays up for browsing; stop it with: nnictl stop {experiment_id}")
    failure = _summary(workspace).get("failure")
    if failure:
        print(f"error: SAFS stopped: {failure}", file=sys.stderr)
    return 0 if status == "DONE" and not failure else 1


def _show_trials(line: ProgressLine, status: str, trials: list[dict[str, Any]], most: int | None,
                 configured: int | None) -> None:
    """``[RUNNING] search: 12 of at most 73 trials, 11 succeeded, 1 running``: the stage is the
    newest trial's; the total is exact once the tuner has changed ``maxTrialNumber`` to the count."""
    from nni_safs.borrowed import recorded_parameters
    counts = {s: sum(t["status"] == s for t in trials) for s in ("SUCCEEDED", "RUNNING", "WAITING", "FAILED")}
    newest = max(trials, key=lambda t: t.get("startTime") or 0, default=None)
    stage = (recorded_parameters(newest) or {}).get("stage", "starting") if newest else "starting"
    done = sum(t["status"] not in ("RUNNING", "WAITING") for t in trials)
    line.update(done, most or len(trials), f"[{status}] {stage}",
                ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v),
                exact=status == "DONE" or (most is not None and most != configured))


def _summary(workspace: Path) -> dict[str, Any]:
    file = workspace / SUMMARY_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def _existing_run(config: SafsConfig, base: Path) -> tuple[str, int] | None:
    """What to print (and the exit status) instead of starting an experiment on a workspace
    that holds a run's results; None when the workspace is free (or holds nothing computed).

    A workspace is one run's record: a finished run with the same settings is reported as it is
    (its table; nothing is computed again); any other run is refused, saying how to see,
    continue or leave it.
    """
    from nni_safs.reports.results import format_table
    from nni_safs.storage.workspace import CONFIG_FILE, holds_results, owned_message, resolve_paths, run_owner
    workspace = Path(resolve_paths(SafsConfig.from_dict(config.to_dict()), base).workspace)
    owner = run_owner(workspace)
    if owner is None or not holds_results(workspace):
        return None
    summary = _summary(workspace)
    stored = json.loads((workspace / CONFIG_FILE).read_text())
    wanted = resolve_paths(SafsConfig.from_dict(config.to_dict()), base).to_dict()
    if summary.get("finished") and not summary.get("failure") and {**SafsConfig.defaults(), **stored} == wanted:
        return (f"workspace {workspace} already holds the finished run of {owner['run']} with these settings: "
                f"nothing is run again (a workspace is one run's record). Its results, as "
                f"`safs results {workspace}` prints them:\n\n{format_table(summary)}\n"
                f"To run again: --set workspace=OTHER_PATH, or delete {workspace}."), 0
    return f"error: {owned_message(workspace, owner, 'a new experiment')}", 1


def _exit_code(workspace: Path) -> int:
    summary = json.loads((workspace / SUMMARY_FILE).read_text())
    return 1 if summary.get("failure") else 0


def cmd_results(args: argparse.Namespace) -> int:
    """safs results: the table of a run, finished or not."""
    from nni_safs.reports.results import format_table
    file = Path(args.workspace) / SUMMARY_FILE
    if not file.is_file():
        raise SystemExit(f"error: {file} not found: the run has not finished (or this is not a workspace)")
    summary = json.loads(file.read_text())
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """safs export: the found activations as source, or with ``--model`` the pruned network as a torch.export program."""
    from nni_safs.storage.workspace import model_checkpoint
    workspace = Path(args.workspace)
    with _explain_missing(workspace):
        if args.model:
            from nni_safs.reports.export import export_model
            path = export_model(workspace, args.output, args.variant)
            print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
        else:
            from nni_safs.reports.export import export_activations
            print(f"wrote {export_activations(model_checkpoint(workspace, args.variant), args.output)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """safs plot: activation curves, layer sparsity and the search trace as image files."""
    from nni_safs.reports.plots import plot_workspace
    with _explain_missing(Path(args.workspace)):
        for path in plot_workspace(args.workspace, args.output):
            print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """safs report: the run on one HTML page that opens without a server."""
    from nni_safs.reports.page import write_report
    with _explain_missing(Path(args.workspace)):
        print(f"wrote {write_report(args.workspace, args.output)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """safs compare: finished runs side by side, paired by seed where they pair."""
    from nni_safs.reports.compare import comparison, load_runs
    print("\n".join(comparison(load_runs(args.workspaces), args.by)))
    return 0


@contextmanager
def _explain_missing(workspace: Path):
    """A file the command needs is missing: say so, and where the workspace's run stands."""
    from nni_safs.reports.results import run_status
    try:
        yield
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; {run_status(workspace)}") from None


def _add_set_option(parser: argparse.ArgumentParser, keys: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override {keys} of CONFIG without editing it; the value is read as YAML "
                             "(repeatable: --set dense_epochs=1 --set device=cpu)")


def build_parser() -> argparse.ArgumentParser:
    """The ``safs`` command line: one subcommand per verb."""
    parser = argparse.ArgumentParser(prog="safs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("experiment", help="run CONFIG as an NNI experiment and print the results table")
    p.add_argument("config", help="NNI experiment YAML (see experiment_configs/)")
    p.add_argument("--port", type=int, default=8080, help="web portal / REST port (default 8080)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")
    p.add_argument("--stop", action="store_true", help="stop the NNI manager when the experiment ends")
    _add_set_option(p, "a classArg, or one of the experiment fields " + ", ".join(EXPERIMENT_FIELDS))
    p.add_argument("--expose", action="store_true",
                   help="let the NNI manager (portal, REST API) listen on every interface, NNI's own behaviour; "
                        "by default it listens on 127.0.0.1 only (its REST API has no authentication)")
    p.set_defaults(func=cmd_experiment)

    p = verbs.add_parser("run", help="run the pipeline in-process (no NNI manager), sequentially")
    p.add_argument("config", help="NNI experiment YAML or a YAML of classArgs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_set_option(p, "a classArg")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("results", help="print the results table of a finished run")
    p.add_argument("workspace")
    p.add_argument("--json", action="store_true", help="print summary.json instead")
    p.set_defaults(func=cmd_results)

    p = verbs.add_parser("export", help="write the found activations as a self-contained module, "
                                        "or (--model) the pruned network as a torch-only file")
    p.add_argument("workspace")
    p.add_argument("-o", "--output", required=True, help="the file to write (.py; .pt with --model)")
    p.add_argument("--model", action="store_true",
                   help="write the pruned, fine-tuned network with its activations, weights stored sparse, "
                        "as one torch.export program (torch.export.load(F).module(); no nni_safs needed)")
    p.add_argument("--variant", default="safs",
                   help="whose model: safs (default), stage1, stage2 or baseline (magnitude pruning, ReLU)")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("plot", help="draw activation curves, layer sparsity and the search trace")
    p.add_argument("workspace")
    p.add_argument("-o", "--output", required=True, help="folder for the PNG files")
    p.set_defaults(func=cmd_plot)

    p = verbs.add_parser("report", help="write the run on one self-contained HTML page (no server needed)")
    p.add_argument("workspace")
    p.add_argument("-o", "--output", help="the HTML file to write (default WORKSPACE/report.html)")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("compare", help="finished runs side by side: means, 95%% intervals, paired differences")
    p.add_argument("workspaces", nargs="+", metavar="WORKSPACE")
    p.add_argument("--by", metavar="KEY",
                   help="the setting that groups the runs (e.g. search_algorithm); default: every setting that "
                        "differs between them other than seed and workspace")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``safs`` command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, StateLockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
