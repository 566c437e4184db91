"""``--set key=value`` on ``safs experiment`` / ``safs run``: parsing, validation, where each key lands."""
from pathlib import Path

import pytest
import yaml

from nni_safs.cli import _config_file, load_run_config, main, read_config
from nni_safs.overrides import EXPERIMENT_FIELDS, apply_overrides, parse_overrides

REPO = Path(__file__).resolve().parents[1]
VGG = REPO / "experiment_configs" / "vgg16_safs.yml"


def test_values_are_read_as_yaml():
    assert parse_overrides(["dense_epochs=1", "ratio=0.9", "device=cpu", "download=false", "data_root=null",
                            "dataset_options={num_classes: 10}", "plugins=[a, b]", "workspace=ws=1"]) == {
        "dense_epochs": 1, "ratio": 0.9, "device": "cpu", "download": False, "data_root": None,
        "dataset_options": {"num_classes": 10}, "plugins": ["a", "b"], "workspace": "ws=1"}


@pytest.mark.parametrize("pairs,fields,message", [
    (["dense_epoch=1"], (), r"unknown --set key 'dense_epoch'; valid keys: .*dense_epochs.*workspace"),
    (["trialConcurrency=2"], (), r"unknown --set key 'trialConcurrency'; valid keys: (?!.*trialConcurrency)"),
    (["dense_epochs"], (), "--set expects key=value, got 'dense_epochs'"),
    (["=3"], (), "--set expects key=value, got '=3'"),
    (["dataset_options={num_classes: 10"], (), "--set dataset_options: value '{num_classes: 10' does not parse"),
    (["trialConcurrency=0"], EXPERIMENT_FIELDS, "trialConcurrency must be a positive integer, got 0"),
    (["maxTrialNumber=ten"], EXPERIMENT_FIELDS, "maxTrialNumber must be a positive integer, got 'ten'"),
    (["maxExperimentDuration=10 minutes"], EXPERIMENT_FIELDS, "maxExperimentDuration must be a positive duration"),
    (["maxExperimentDuration=0"], EXPERIMENT_FIELDS, "maxExperimentDuration must be a positive duration"),
])
def test_bad_overrides_name_the_key_and_what_is_valid(pairs, fields, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(pairs, fields)


def test_experiment_fields_go_to_the_top_and_class_args_to_the_tuner():
    data = yaml.safe_load(VGG.read_text())
    out = apply_overrides(data, ["trialConcurrency=2", "maxExperimentDuration=20m", "dense_epochs=1",
                                 "dataset_options={num_classes: 10}"], experiment=True)
    assert (out["trialConcurrency"], out["maxExperimentDuration"]) == (2, "20m")
    assert out["tuner"]["classArgs"] == {**data["tuner"]["classArgs"], "dense_epochs": 1,
                                         "dataset_options": {"num_classes": 10}}
    assert out["tuner"]["className"] == data["tuner"]["className"]
    assert data == yaml.safe_load(VGG.read_text())  # the input is not changed
    assert apply_overrides({"model": "vgg16"}, ["dense_epochs=1"]) == {"model": "vgg16", "dense_epochs": 1}
    with pytest.raises(ValueError, match="unknown --set key 'trialConcurrency'"):
        apply_overrides(data, ["trialConcurrency=2"])  # safs run: no NNI experiment to change
    with pytest.raises(ValueError, match="unknown --set key 'trialConcurrency'"):
        apply_overrides({"model": "vgg16"}, ["trialConcurrency=2"], experiment=True)  # a plain YAML of classArgs


def test_run_config_with_overrides_is_validated_as_a_whole(capsys):
    config, base = load_run_config(VGG, ["dense_epochs=1", "device=cpu", "data_root=/data/c10"])
    assert (config.dense_epochs, config.device, config.data_root, config.model) == (1, "cpu", "/data/c10", "vgg16")
    assert base == REPO
    with pytest.raises(SystemExit, match=r"vgg16_safs.yml with --set dense_epochs=0: dense_epochs must be a "
                                         r"positive integer, got 0"):
        load_run_config(VGG, ["dense_epochs=0"])
    with pytest.raises(SystemExit, match="unknown --set key 'trialConcurrency'"):
        main(["run", str(VGG), "--set", "trialConcurrency=2"])
    with pytest.raises(SystemExit, match="unknown --set key 'epochs'; valid keys: "):
        main(["experiment", str(VGG), "--set", "epochs=1"])  # refused before NNI starts
    with pytest.raises(SystemExit, match="unknown scope 'rows'"):
        main(["experiment", str(VGG), "--set", "scope=rows"])


def test_nnictl_gets_the_overridden_config_beside_the_original_then_it_is_removed(tmp_path):
    original = tmp_path / "configs" / "exp.yml"
    original.parent.mkdir()
    original.write_text(VGG.read_text())
    data = read_config(original, ["trialConcurrency=3", "search_steps=2"], experiment=True)
    with _config_file(original, data) as written:
        assert written.parent == original.parent  # relative codeDirectory / trialCodeDirectory still hold
        content = yaml.safe_load(written.read_text())
        assert content["trialConcurrency"] == 3 and content["tuner"]["classArgs"]["search_steps"] == 2
        assert content["tuner"]["codeDirectory"] == ".."
    assert sorted(p.name for p in original.parent.iterdir()) == ["exp.yml"]
    with _config_file(original, None) as written:
        assert written == original
