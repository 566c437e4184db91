"""The exported activations file: torch only, and the same numbers as nni_safs' own slots."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from nni_safs.activations import ActivationSlot, apply_genome, op_names, slots
from nni_safs.checkpoints import save_checkpoint
from nni_safs.export import OP_SOURCES, export_activations, render_module
from nni_safs.models import build_model

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
    assert lines and all("nni_safs" not in line and line.split()[1].split(".")[0] == "torch" for line in lines)
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


def test_every_catalog_op_has_a_source():
    assert set(OP_SOURCES) == set(op_names())


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
    slot.op_name = "custom"  # e.g. an op a user registered: no source to write
    with pytest.raises(ValueError, match=r"cannot export op\(s\) \['custom'\]"):
        render_module({"act1": slot}, "lenet5", [])
    state = build_model("lenet5").state_dict()  # all ReLU
    path = tmp_path / "ck.pt"
    save_checkpoint(path, state, {"model": "lenet5"}, masks={})  # e.g. pruned.pt
    with pytest.raises(ValueError, match="names no activation genome"):
        export_activations(path, tmp_path / "found.py")
    save_checkpoint(path, state, {"model": "lenet5", "genome": {"act1": "acon"}}, masks={})
    with pytest.raises(ValueError, match="slot 'act1' do not fit op 'acon'"):
        export_activations(path, tmp_path / "found.py")
