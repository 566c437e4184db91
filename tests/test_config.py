import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_safs.cli import load_run_config, main
from nni_safs.settings.config import SafsConfig
from nni_safs.method.spaces import flatten_hparams, load_hpo_space, nest_hparams

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
    space = load_hpo_space()  # the reference SAFS's stage-2 space
    branches = {branch["_name"]: branch for branch in space["optimizer"]["_value"]}
    assert list(branches) == ["sgd", "tadam", "fromage", "adam"]
    for branch in branches.values():
        assert branch["lr"] == {"_type": "loguniform", "_value": [1e-4, 0.1]}
        assert branch["weight_decay"] == {"_type": "uniform", "_value": [1e-5, 0.1]}
    assert branches["sgd"]["momentum"] == {"_type": "uniform", "_value": [0.1, 0.999]}
    assert set(branches["sgd"]["scheduler"]["_value"]) == {"step_halving", "step", "cosine_warm_restarts", "plateau",
                                                           "linear_warmup", "constant_warmup"}
    assert branches["adam"]["beta2"]["_value"] == [0.99]
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
