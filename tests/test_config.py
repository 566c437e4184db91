import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_safs.cli import load_run_config, main
from nni_safs.method.spaces import flatten_hparams, load_hpo_space, nest_hparams
from nni_safs.settings.config import SafsConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("values,message", [
    ({"model": "alexnet"}, "unknown model 'alexnet'; valid names: lenet5, lenet5_padded, vgg16"),
    ({"dataset": "svhn"}, "unknown dataset 'svhn'; valid names: .*mnist5k"),
    ({"scope": "row"}, "unknown scope 'row'; valid: layer, global, lamp"),
    ({"search_algorithm": "anneal"}, "unknown search_algorithm 'anneal'"),
    ({"ratio": 1.0}, r"ratio must be in \(0, 1\), got 1.0"),
    ({"ratio": 0}, r"ratio must be in \(0, 1\)"),
    ({"hpo_epochs": 0}, "hpo_epochs must be a positive integer, got 0"),
    ({"dense_epochs": -3}, "dense_epochs must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"confirm_finalists": 0}, "confirm_finalists must be a positive integer, got 0"),
    ({"confirm_uniform": -1}, "confirm_uniform must be an integer >= 0, got -1"),
    ({"threads": -1}, "threads must be an integer >= 0"),
    ({"search_steps": 30, "max_search_steps": 10}, "max_search_steps .10. must be >= search_steps"),
    ({"search_algorithm": "asha", "search_epochs": 30, "search_steps": 20, "confirm_top": 1},
     "search_algorithm 'asha' scores its top rung at search_epochs, which replaces the confirmation"),
    ({"search_algorithm": "asha", "search_epochs": 30, "search_steps": 8},
     r"search_steps must be >= 9 with asha \(3 rungs"),
    ({"search_algorithm": "asha", "search_epochs": 8, "search_min_epochs": 10},
     r"search_min_epochs \(10\) must be <= search_epochs \(8\)"),
    ({"search_algorithm": "asha", "search_reduction_factor": 1}, "search_reduction_factor must be >= 2, got 1"),
    ({"search_min_epochs": 0}, "search_min_epochs must be a positive integer, got 0"),
    ({"search_init": "uniform", "search_algorithm": "tpe"}, "search_init 'uniform' needs search_algorithm lahc or asha"),
    ({"hpo_promotion": "hyperband"}, "unknown hpo_promotion 'hyperband'; valid: none, asha"),
    ({"hpo_promotion": "asha", "hpo_epochs": 30, "hpo_trials": 8},
     r"hpo_trials must be >= 9 with hpo_promotion 'asha' \(3 rungs: hpo_reduction_factor \*\* 2\), so a trial can"),
    ({"hpo_promotion": "asha", "hpo_epochs": 8, "hpo_min_epochs": 10}, r"hpo_min_epochs \(10\) must be <= hpo_epochs \(8\)"),
    ({"hpo_promotion": "asha", "hpo_reduction_factor": 1}, "hpo_reduction_factor must be >= 2, got 1"),
    ({"hpo_min_epochs": 0}, "hpo_min_epochs must be a positive integer, got 0"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ({"train_hparams": {"optimizer": "rmsprop", "lr": 0.1}}, "unknown train_hparams.optimizer 'rmsprop'"),
    ({"train_hparams": {"optimizer": "sgd", "lr": 0}}, "train_hparams.lr must be a positive number"),
    ({"learning_rate": 0.1}, r"unknown setting\(s\) \['learning_rate'\]; valid settings"),
])
def test_bad_settings_name_key_and_value(values, message):
    with pytest.raises(ValueError, match=message):
        SafsConfig.from_dict(values)


def test_paper_hparams_by_model():
    assert SafsConfig(model="lenet5").hparams["optimizer"] == "adam"
    vgg = SafsConfig(model="vgg16").hparams
    assert (vgg["optimizer"], vgg["lr"], vgg["momentum"], vgg["scheduler"]) == ("sgd", 1e-3, 0.9, "step_halving")


def test_hpo_space_file(tmp_path):
    space = load_hpo_space()  # the reference SAFS's stage-2 space (item by item: tests/test_recipes.py)
    assert [branch["_name"] for branch in space["optimizer"]["_value"]] == ["sgd", "tadam", "fromage", "adam"]
    embedded = load_hpo_space(REPO / "search_spaces" / "hpo_space_embedded.json")
    (adam,) = embedded["optimizer"]["_value"]  # the embedded default's: where 8-trial studies found working runs
    assert adam["_name"] == "adam" and adam["lr"]["_value"] == [1e-3, 0.1]
    assert adam["weight_decay"]["_value"] == [1e-5, 1e-2]
    assert adam["scheduler"]["_value"] == ["cosine"]  # every study trial and final column anneals
    # so the dense hyperparameters (constant lr) are no point of it: no default first trial
    assert nest_hparams(SafsConfig(model="lenet5_padded").hparams, embedded) is None
    bad = tmp_path / "space.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="hpo_space file .* does not parse"):
        load_hpo_space(bad)
    bad.write_text('{"optimizer": {"_type": "choice", "_value": [{"_name": "lion", "lr": 0.1}]}}')
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        load_hpo_space(bad)
    assert flatten_hparams({"optimizer": {"_name": "sgd", "lr": 0.1, "scheduler": "cosine"}}) == \
        {"optimizer": "sgd", "lr": 0.1, "scheduler": "cosine"}


def test_every_shipped_experiment_config_is_valid():
    configs = sorted((REPO / "experiment_configs").glob("*_safs.yml")) + \
        [REPO / "experiment_configs" / "lenet5_mnist_paper.yml"] + \
        [REPO / "experiment_configs" / "remote_shared_storage_example.yml"]
    assert len(configs) >= 5
    for path in configs:
        config, base = load_run_config(path)
        assert base == REPO, path
        if config.hpo_default_first:  # asked for, it must happen: the space can express the dense default
            space = load_hpo_space(base / config.hpo_space if config.hpo_space else None)
            assert nest_hparams(config.hparams, space) is not None, path


def test_the_remote_example_is_valid_for_nni_and_safs_experiment_checks_its_manager_address(tmp_path, capsys):
    from nni.experiment.config import ExperimentConfig

    from nni_safs.integration.manager_host import remote_reach_problem
    from nni_safs_loopback import LOOPBACK
    path = REPO / "experiment_configs" / "remote_shared_storage_example.yml"
    example = yaml.safe_load(path.read_text())
    key = tmp_path / "id_ed25519"
    key.write_text("")
    for machine in example["trainingService"]["machineList"]:
        machine["sshKeyFile"] = str(key)  # NNI requires the key file to exist
    ExperimentConfig(**example).validate()  # NNI's own schema knows every key
    assert remote_reach_problem(example, None) is None  # --expose
    assert "listen on 127.0.0.1 only: add --expose" in remote_reach_problem(example, LOOPBACK)
    assert main(["experiment", str(path)]) == 2  # refused before anything starts
    assert "add --expose" in capsys.readouterr().err
    for ip in (None, "127.0.0.1"):
        example["nniManagerIp"] = ip
        assert "to connect back to themselves" in remote_reach_problem(example, None)
    example["trainingService"]["machineList"] = [{"host": "127.0.0.1", "user": "u"}]
    assert remote_reach_problem(example, LOOPBACK) is None  # machines on this host reach a loopback manager
    assert remote_reach_problem(yaml.safe_load((path.parent / "lenet5_mnist_safs.yml").read_text()), LOOPBACK) is None


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("model: lenet7\n")
    with pytest.raises(SystemExit, match="unknown model 'lenet7'"):
        main(["run", str(bad)])
    out = subprocess.run([sys.executable, "-m", "nni_safs.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("experiment", "run", "results", "export", "plot"):
        assert verb in out.stdout
        with pytest.raises(SystemExit) as exited:
            main([verb, "--help"])
        assert exited.value.code == 0
        assert "usage: safs " + verb in capsys.readouterr().out


@pytest.mark.parametrize("dataset,download,message", [
    ("cifar10", False, r"does not hold the cifar10 files: missing cifar-10-batches-py/data_batch_1.*download: true"),
    ("mnist", False, "does not hold the mnist files: missing MNIST/raw/train-images-idx3-ubyte"),
    ("imagenet16", True, "does not hold the imagenet16 files: missing train_data_batch_1"),
])
def test_missing_data_is_rejected_before_any_trial(tmp_path, dataset, download, message):
    from nni_safs.integration.pipelines import build_pipeline
    config = SafsConfig(dataset=dataset, data_root=str(tmp_path / "nothing"), download=download,
                        workspace=str(tmp_path / "ws"))
    with pytest.raises(FileNotFoundError, match=message):
        build_pipeline(config)
    build_pipeline(SafsConfig(dataset="cifar10", data_root=str(tmp_path), download=True,
                                       workspace=str(tmp_path / "ws")))  # fetched by the trial


def test_relative_paths_resolve_against_the_code_directory(tmp_path):
    from nni_safs.storage.workspace import load_config, open_workspace
    (tmp_path / "data").mkdir()
    config = open_workspace(SafsConfig(workspace="ws", data_root="data", hpo_space="spaces/hpo.json"), tmp_path)
    assert config.workspace == str(tmp_path / "ws") and config.data_root == str(tmp_path / "data")
    assert load_config(tmp_path / "ws").hpo_space == str(tmp_path / "spaces" / "hpo.json")


def test_the_loopback_preload_reaches_nnis_manager_only_and_expose_removes_it(tmp_path):
    """What nni_safs_loopback.pth sets at each Python start, and what the preload then does."""
    import subprocess

    import nni_node

    from nni_safs_loopback import EXPOSE, PRELOAD, default_to_loopback, manager_env
    env = {"NODE_OPTIONS": "--max-http-header-size=9000"}
    default_to_loopback(env)
    default_to_loopback(env)  # a Python started from that one: nothing added twice
    assert env["NODE_OPTIONS"] == f'--max-http-header-size=9000 --require "{PRELOAD}"'
    assert env["NNI_SAFS_LISTEN_HOST"] == "127.0.0.1"
    exposed = manager_env(None, env)  # safs experiment --expose
    assert exposed["NODE_OPTIONS"] == "--max-http-header-size=9000" and exposed[EXPOSE] == "1"
    assert "NNI_SAFS_LISTEN_HOST" not in exposed
    default_to_loopback(exposed)  # the nnictl it starts leaves it so
    assert exposed["NODE_OPTIONS"] == "--max-http-header-size=9000"
    listen = ("const s = require('net').createServer(); "
              "s.listen(0, () => { console.log(s.address().address); s.close(); });")
    node = Path(nni_node.__path__[0]) / "node"
    for name, expected in (("nni_node/main.js", "127.0.0.1"), ("other/main.js", "::")):
        script = tmp_path / name
        script.parent.mkdir()
        script.write_text(listen)
        out = subprocess.run([str(node), str(script)], env={**os.environ, **manager_env("127.0.0.1", {})},
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == expected, (name, out.stdout, out.stderr)


def test_the_preload_gives_every_listen_form_without_a_host_loopback(tmp_path):
    import subprocess

    import nni_node

    from nni_safs_loopback import manager_env
    node = Path(nni_node.__path__[0]) / "node"
    script = tmp_path / "nni_node" / "main.js"
    script.parent.mkdir()
    forms = {"port, callback": "s.listen(0, done)", "callback": "s.listen(done)",
             "options": "s.listen({port: 0}, done)", "port, backlog, callback": "s.listen(0, 511, done)",
             "port as a string": "s.listen('0', done)"}
    for form, call in forms.items():
        script.write_text("const s = require('net').createServer(); "
                          f"const done = () => {{ console.log(s.address().address); s.close(); }}; {call};")
        out = subprocess.run([str(node), str(script)], env={**os.environ, **manager_env("127.0.0.1", {})},
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "127.0.0.1", (form, out.stdout, out.stderr)


def test_a_stale_or_missing_preload_is_never_handed_to_node(tmp_path, monkeypatch):
    """A NODE_OPTIONS preload of a deleted environment would make every node fail to start."""
    import nni_safs_loopback
    stale = {"NODE_OPTIONS": '--max-http-header-size=9000 --require "/gone/venv/nni_safs/integration/listen_host.js"'}
    env = nni_safs_loopback.manager_env("127.0.0.1", stale)
    assert "/gone" not in env["NODE_OPTIONS"] and nni_safs_loopback.PRELOAD in env["NODE_OPTIONS"]
    monkeypatch.setattr(nni_safs_loopback, "PRELOAD", str(tmp_path / "missing.js"))
    env = nni_safs_loopback.manager_env("127.0.0.1", stale)
    assert env["NODE_OPTIONS"] == "--max-http-header-size=9000"


@pytest.mark.parametrize("address, asked, refused", [("0.0.0.0", False, True), ("0.0.0.0", True, False),
                                                      ("127.0.0.1", False, False)])
def test_the_tuner_stops_a_manager_that_listens_beyond_loopback_unasked(tmp_path, address, asked, refused):
    """Fail closed: whatever started the manager, the tuner looks at what it listens on."""
    import subprocess
    import sys

    import nni_node
    from conftest import free_port
    port = free_port()
    check = ("from nni_safs.integration.manager_api import ManagerClient; "
             f"ManagerClient({port}).check_loopback(exposure_asked={asked}); print('checked', flush=True)")
    manager = tmp_path / "main.js"  # found as the manager: the dispatcher's ancestor running main.js
    manager.write_text("const s = require('net').createServer(); "
                       f"s.listen({port}, '{address}', () => {{ const r = require('child_process').spawnSync("
                       f"{json.dumps(sys.executable)}, ['-c', {json.dumps(check)}], {{stdio: 'inherit'}}); "
                       "process.exit(r.status); });")
    out = subprocess.run([str(Path(nni_node.__path__[0]) / "node"), str(manager)], capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"})
    if refused:
        assert "ExposedManagerError" in out.stderr and "NNI_SAFS_EXPOSE=1" in out.stderr, out.stderr
        assert out.returncode == -15  # the manager was terminated
    else:
        assert out.returncode == 0 and "checked" in out.stdout, out.stdout + out.stderr


def reference_rows(text: str) -> list[tuple[str, str]]:
    """(key, default cell) of each row of docs/configuration.md's key table."""
    lines = text.splitlines()
    start = lines.index("| key | default | meaning |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return rows


def documented_default(value) -> str | None:
    """A default as the reference writes it; None where the row describes it in words (None in the code)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_every_setting_has_exactly_one_row_in_the_configuration_reference():
    text = (REPO / "docs" / "configuration.md").read_text()
    rows = reference_rows(text)
    keys = [key for key, _ in rows]
    defaults = SafsConfig.defaults()
    assert sorted(keys) == sorted(defaults), (
        f"missing rows: {sorted(set(defaults) - set(keys))}; rows of no setting: {sorted(set(keys) - set(defaults))}; "
        f"repeated: {sorted({k for k in keys if keys.count(k) > 1})}")
    wrong = {key: (cell, documented_default(defaults[key])) for key, cell in rows
             if documented_default(defaults[key]) not in (None, cell)}
    assert wrong == {}  # row's default cell against the code's
