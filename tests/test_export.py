"""What `safs export` writes (the activations module; with --model the network itself): torch only,
and the same numbers as nni_safs' own model."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

from nni_safs.cli import main
from nni_safs.method.contract import SAFS, JobSpec, Stage
from nni_safs.method.genomes import genome_from_string
from nni_safs.models import build_model
from nni_safs.models.activations import OPS, ActivationSlot, apply_genome, op_names, register_op, slots
from nni_safs.pruning import magnitude_prune
from nni_safs.reports.export import METADATA_FILE, export_activations, render_module, to_exported_program
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.checkpoints import save_checkpoint
from nni_safs.storage.workspace import open_workspace
from nni_safs.training.jobs import load_kept_model, run_job

SCALE = 2.0


class ScaledByModuleConstant(torch.nn.Module):
    """A user's op that reads a constant of its own module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCALE * x


GENOME = {"act1": "acon", "act2": "srs", "act3": "tanhsoft", "act4": "symexp"}
WIDE = torch.cat([torch.linspace(-1e4, 1e4, 20001), torch.tensor([0.0, 1e-30, -1e-30, 88.0, -88.0, 89.0])])


def perturb(slot: ActivationSlot, generator: torch.Generator) -> None:
    """Move alpha, beta and the op's parameters away from their defaults."""
    with torch.no_grad():
        for param in slot.parameters():
            param.add_(torch.randn((), generator=generator))


def import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.lstrip().startswith(("import ", "from "))]


@pytest.fixture
def trained(tmp_path):
    """A LeNet-5 with a genome and perturbed slot parameters, saved as a final checkpoint."""
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_genome(model, GENOME)
    generator = torch.Generator().manual_seed(1)
    for slot in slots(model).values():
        perturb(slot, generator)
    meta = {"model": "lenet5", "dataset": "mnist5k", "ratio": 0.99, "scope": "layer", "genome": GENOME,
            "hparams": {"optimizer": "adam", "lr": 1e-3}, "train_scales": True, "epochs": 2}
    path = tmp_path / "final_safs.pt"
    save_checkpoint(path, model.state_dict(), meta, masks={})
    return model.eval(), path


def test_installed_model_reproduces_the_trained_one_exactly(trained, tmp_path):
    model, checkpoint = trained
    output = export_activations(checkpoint, tmp_path / "found_activations.py")
    exported = import_file(output)
    assert exported.GENOME == GENOME and exported.MODEL == "lenet5"

    plain = build_model("lenet5")  # ReLU slots with default alpha/beta
    slot_keys = {key for key in model.state_dict() if key.split(".")[0] in GENOME}
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in slot_keys}, strict=False)
    assert exported.install(plain) is plain
    assert all(type(plain.get_submodule(name)).__name__ == "FoundActivation" for name in GENOME)

    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), model(x))
    # same parameter names as ActivationSlot, same values: the state dicts are interchangeable
    assert plain.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.state_dict().items())


def test_generated_file_needs_only_torch(trained, tmp_path):
    _, checkpoint = trained
    output = export_activations(checkpoint, tmp_path / "found.py")
    lines = import_lines(output)
    assert lines and all("nni_safs" not in line and line.split()[1].split(".")[0] in ("torch", "math") for line in lines)
    text = output.read_text()
    assert "lenet5" in text and "act1=acon;act2=srs;act3=tanhsoft;act4=symexp" in text and str(tmp_path) in text
    assert "class Relu(" not in text  # only the genome's ops are written
    # import it where nni_safs cannot be imported at all
    script = ("import importlib.abc, importlib.util, sys\n"
              "class Block(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.partition('.')[0] == 'nni_safs':\n"
              "            raise ImportError('nni_safs is blocked')\n"
              "sys.meta_path.insert(0, Block())\n"
              f"spec = importlib.util.spec_from_file_location('found', {str(output)!r})\n"
              "module = importlib.util.module_from_spec(spec)\n"
              "spec.loader.exec_module(module)\n"
              "import torch\n"
              "print(sorted(module.build_activations()), float(module.build_activations()['act4'](torch.ones(1))))\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("['act1', 'act2', 'act3', 'act4']")


def test_install_names_missing_paths(trained, tmp_path):
    _, checkpoint = trained
    exported = import_file(export_activations(checkpoint, tmp_path / "found.py"))
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(LookupError, match=r"no module at slot path\(s\) \['act1', 'act2', 'act3', 'act4'\]"):
        exported.install(other)
    assert isinstance(other[1], torch.nn.ReLU)  # nothing replaced on failure


@pytest.mark.parametrize("op", op_names())
def test_each_op_matches_the_catalog_bit_for_bit(op, tmp_path):
    generator = torch.Generator().manual_seed(len(op))
    slot = ActivationSlot(op)
    perturb(slot, generator)
    path = tmp_path / f"{op}.py"
    path.write_text(render_module({"slot": slot}, "test", []))
    exported = import_file(path).build_activations()["slot"]
    with torch.no_grad():
        for alpha, beta in [(None, None), (50.0, 30.0), (-20.0, -40.0), (1e-3, 1e3)]:
            if alpha is not None:
                for module in (slot, exported):
                    module.alpha.fill_(alpha)
                    module.beta.fill_(beta)
            expected, got = slot(WIDE), exported(WIDE)
            assert torch.isfinite(expected).all()
            assert torch.equal(got, expected), (op, alpha, beta, (got - expected).abs().max())


def test_refuses_what_it_cannot_write(tmp_path):
    slot = ActivationSlot("relu")
    slot.op_name = "custom"  # not in the catalog
    with pytest.raises(ValueError, match=r"cannot export op\(s\) \['custom'\]"):
        render_module({"act1": slot}, "lenet5", [])
    register_op("scaled_test")(ScaledByModuleConstant)  # uses a name of its own module: cannot run alone
    try:
        with pytest.raises(ValueError, match="written activations do not run.*NameError"):
            render_module({"act1": ActivationSlot("scaled_test")}, "lenet5", [])
    finally:
        OPS._entries.pop("scaled_test"), OPS._facts.pop("scaled_test", None)
    state = build_model("lenet5").state_dict()  # all ReLU
    path = tmp_path / "ck.pt"
    save_checkpoint(path, state, {"model": "lenet5"}, masks={})  # e.g. pruned.pt
    with pytest.raises(ValueError, match="names no activation genome"):
        export_activations(path, tmp_path / "found.py")
    save_checkpoint(path, state, {"model": "lenet5", "genome": {"act1": "acon"}}, masks={})
    with pytest.raises(ValueError, match="slot 'act1' do not fit op 'acon'"):
        export_activations(path, tmp_path / "found.py")


# ---------------------------------------------------------------- safs export --model
MODEL_GENOME = "act1=acon;act2=srs;act3=tanhsoft;act4=symexp"


@pytest.fixture(scope="module")
def model_workspace(tmp_path_factory):
    """A real LeNet-5 workspace at ratio 0.99: prepared, then the SAFS final job, as trials run them."""
    root = tmp_path_factory.mktemp("model") / "ws"
    config = open_workspace(SafsConfig(model="lenet5", dataset="mnist5k", device="cpu", scope="lamp", ratio=0.99,
                                       dense_epochs=2, batch_size=256, workspace=str(root)))
    run_job(JobSpec(0, Stage.PREPARE, "", str(root)))
    run_job(JobSpec(1, Stage.FINAL, SAFS, str(root), genome=MODEL_GENOME, hparams=config.hparams, epochs=1,
                    train_scales=True))
    return root


def workspace_model(workspace: Path):
    """The SAFS final model as nni_safs itself loads it, its checkpoint, and the test split's images."""
    model, checkpoint, splits = load_kept_model(workspace, SAFS)
    images = torch.stack([splits.test[i][0] for i in range(len(splits.test))])
    return model, checkpoint, images


@pytest.fixture(scope="module")
def exported(model_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "lenet5_safs.pt"
    assert main(["export", str(model_workspace), "--model", "-o", str(out)]) == 0
    return out


def test_exported_model_runs_without_nni_safs_and_gives_the_same_predictions(model_workspace, exported, tmp_path):
    model, checkpoint, images = workspace_model(model_workspace)
    assert {slot.op_name for slot in slots(model).values()} == {"acon", "srs", "tanhsoft", "symexp"}
    assert any(float(slot.alpha) != 1.0 for slot in slots(model).values())  # learned scales, not defaults
    with torch.no_grad():  # a batch of one runs other kernels than the whole split: compare each
        expected = {"split": model(images), "one": model(images[:1])}
    torch.save({"images": images, "expected": expected}, tmp_path / "split.pt")
    script = ("import importlib.abc, sys\n"
              "class Block(importlib.abc.MetaPathFinder):\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name.partition('.')[0] == 'nni_safs':\n"
              "            raise ImportError('nni_safs is blocked')\n"
              "sys.meta_path.insert(0, Block())\n"
              "import torch\n"
              f"split = torch.load({str(tmp_path / 'split.pt')!r})\n"
              f"model = torch.export.load({str(exported)!r}).module()\n"
              "with torch.no_grad():\n"
              "    logits = model(split['images'])\n"
              "    one = model(split['images'][:1])\n"
              "assert 'nni_safs' not in sys.modules\n"
              "for got, want in ((logits, split['expected']['split']), (one, split['expected']['one'])):\n"
              "    print(torch.allclose(got, want, rtol=1e-4, atol=1e-4), torch.equal(got.argmax(1), want.argmax(1)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the same logits up to float rounding (another process may pick other kernels: bitwise equality
    # holds on one machine and build, not on every CPU) and the same predicted classes
    assert done.stdout.split() == ["True"] * 4
    assert len(images) == 1000  # the whole test split of mnist5k


def test_exported_weights_are_over_ten_times_smaller_than_the_dense_ones(model_workspace, exported, tmp_path):
    _, checkpoint, _ = workspace_model(model_workspace)
    torch.save(checkpoint["state"], tmp_path / "state.pt")  # the dense weights alone, no masks or metadata
    infos = zipfile.ZipFile(exported).infolist()
    weights = sum(info.file_size for info in infos if "/data/weights/weight_" in info.filename)
    assert weights * 10 <= (tmp_path / "state.pt").stat().st_size
    # the rest is the program's graph, a fixed cost that dominates for a network as small as LeNet-5
    assert exported.stat().st_size * 2 <= (model_workspace / "final_safs.pt").stat().st_size
    assert str(Path(__file__).parent.parent / "nni_safs").encode() not in exported.read_bytes()  # no source paths


def test_pruned_weights_are_stored_sparse_and_stay_zero(model_workspace, exported):
    _, checkpoint, _ = workspace_model(model_workspace)
    masks, state = checkpoint["masks"], checkpoint["state"]
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(exported), extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["variant"] == "safs" and meta["genome"] == genome_from_string(MODEL_GENOME) and meta["ratio"] == 0.99
    assert meta["input_shape"] == [1, 28, 28] and meta["sparse_weights"] == list(masks)
    stored = program.state_dict
    assert not set(masks) & {name.removeprefix("model.") for name in stored}  # no dense copy of a pruned weight
    flat = torch.zeros(sum(mask.numel() for mask in masks.values()))
    flat[stored["indices"].long()] = stored["values"]
    weights = dict(zip(masks, flat.split([mask.numel() for mask in masks.values()])))
    for name, mask in masks.items():
        assert torch.equal(weights[name].view(mask.shape), state[name])
        assert not weights[name].view(mask.shape)[mask == 0].any()  # every pruned weight is exactly zero
    kept = sum(int(state[name].count_nonzero()) for name in masks)
    total = sum(mask.numel() for mask in masks.values())
    assert kept <= 0.011 * total and stored["indices"].dtype == torch.int32
    # what the file holds for them: kept values and int32 positions; every other tensor is small
    sizes = sorted(info.file_size for info in zipfile.ZipFile(exported).infolist() if "/data/weights/weight_" in
                   info.filename)
    assert sizes[-2:] == [4 * kept, 4 * kept] and sizes[-3] < 4 * kept


def test_export_model_names_missing_and_unknown_variants(model_workspace, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(model_workspace), "--model", "--variant", "best", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'best'" in err and "baseline, stage1, stage2, safs" in err
    assert "this workspace holds safs" in err
    assert main(["export", str(model_workspace), "--model", "--variant", "stage1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "final_stage1.pt" in err and "holds safs" in err and "has not finished" in err
    assert not out.exists()


def test_export_model_on_an_unfinished_workspace_says_where_the_run_stands(model_workspace, tmp_path, capsys):
    unfinished = tmp_path / "ws"
    unfinished.mkdir()
    for name in ("config.json", "pruned.pt"):  # prepared, nothing fine-tuned yet
        (unfinished / name).write_bytes((model_workspace / name).read_bytes())
    assert main(["export", str(unfinished), "--model", "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "final_safs.pt" in err and "holds none yet" in err and "has not finished (no summary.json yet" in err


@pytest.mark.parametrize("op", op_names())
def test_every_catalog_op_survives_the_model_export(op):

    torch.manual_seed(0)
    model = build_model("lenet5", act=op)
    generator = torch.Generator().manual_seed(len(op))
    for slot in slots(model).values():
        perturb(slot, generator)
    masks = magnitude_prune(model, 0.9, "layer")
    model.eval()
    data = to_exported_program(model, masks, torch.randn(2, 1, 28, 28), {})
    loaded = torch.export.load(io.BytesIO(data)).module()
    x = torch.randn(5, 1, 28, 28, generator=generator) * 30
    with torch.no_grad():
        expected = model(x)
        assert torch.isfinite(expected).all()
        assert torch.equal(loaded(x), expected)


def test_model_export_refuses_revived_weights():

    model = build_model("lenet5")
    masks = magnitude_prune(model, 0.9, "layer")
    with torch.no_grad():
        model.fc2.weight[masks["fc2.weight"] == 0] = 0.5
    with pytest.raises(ValueError, match=r"nonzero .*'fc2.weight': 9072\}: not a pruned model"):
        to_exported_program(model.eval(), masks, torch.randn(2, 1, 28, 28), {})


def test_model_export_and_load_warn_of_nothing(recwarn):
    """torch deprecates TorchScript (every torch.jit call warns); the export format is torch's current one."""
    model = build_model("lenet5")
    masks = magnitude_prune(model, 0.9, "layer")
    data = to_exported_program(model.eval(), masks, torch.randn(2, 1, 28, 28), {})
    torch.export.load(io.BytesIO(data)).module()(torch.randn(3, 1, 28, 28))
    assert [str(w.message) for w in recwarn] == []
