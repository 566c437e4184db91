"""Workspace figures: the PNGs are written, and the data behind them is right."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nni_safs.models import build_model
from nni_safs.models.activations import apply_genome, slots
from nni_safs.pruning import magnitude_prune
from nni_safs.reports.plots import activation_curves, feeding_layers, layer_densities, plot_workspace, trace_points
from nni_safs.storage.checkpoints import save_checkpoint

GENOME = {"act1": "swish", "act2": "srs", "act3": "tanhsoft", "act4": "acon"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (id, fitness, accepted, improved_best, discarded), in the order LAHC records them
TRACE = [(0, 40.0, True, True, False), (1, 35.0, False, False, False), (2, 52.5, True, True, False),
         (3, None, False, False, False), (4, 50.0, True, False, False), (6, 70.0, False, False, True),
         (5, 55.0, True, True, False)]


def lahc_trace() -> list[dict]:
    return [{"id": i, "genome": GENOME, "fitness": f, "energy": 1 / f if f else math.inf, "accepted": a,
             "improved_best": b, "history": [], "discarded": d} for i, f, a, b, d in TRACE]


@pytest.fixture
def workspace(tmp_path):
    """A workspace as a finished run leaves it (only the files the plots read)."""
    torch.manual_seed(0)
    model = build_model("lenet5")
    apply_genome(model, GENOME)
    act3 = slots(model)["act3"]
    with torch.no_grad():
        act3.alpha.fill_(2.0)
        act3.beta.fill_(0.5)
        act3.op.a.fill_(1.5)
    masks = magnitude_prune(model, 0.9, "layer")
    meta = {"model": "lenet5", "dataset": "mnist5k", "ratio": 0.9, "scope": "layer", "genome": GENOME,
            "hparams": {}, "train_scales": True, "epochs": 1}
    save_checkpoint(tmp_path / "final_safs.pt", model.state_dict(), meta, masks=masks)
    summary = {"config": {"model": "lenet5"}, "columns": {},
               "stages": {"search": {"algorithm": "lahc", "trace": lahc_trace()}}, "jobs": []}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_writes_the_three_figures(workspace, tmp_path):
    written = plot_workspace(workspace, tmp_path / "plots")
    assert [p.name for p in written] == ["activations.png", "sparsity.png", "search_trace.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_curve_is_the_slot_formula(workspace):
    model = build_model("lenet5")
    apply_genome(model, GENOME)
    model.load_state_dict(torch.load(workspace / "final_safs.pt", weights_only=True)["state"])
    x = torch.linspace(-5, 5, 101)
    curves = activation_curves(slots(model), x)
    assert list(curves) == list(GENOME)
    expected = 2.0 * torch.tanh(1.5 * (0.5 * x)) * F.softplus(0.5 * x)
    np.testing.assert_allclose(curves["act3"], expected.numpy(), atol=1e-6)


def test_slots_pair_with_the_layer_feeding_them():
    lenet = build_model("lenet5").state_dict()
    assert feeding_layers("lenet5", lenet) == {"act1": "conv1", "act2": "conv2", "act3": "fc1", "act4": "fc2"}
    resnet = feeding_layers("resnet18", build_model("resnet18").state_dict())
    assert resnet["act1"] == "conv1" and resnet["layer1.0.act2"] == "layer1.0.conv2"
    assert resnet["layer2.0.act2"] == "layer2.0.shortcut.0"  # last Conv run before the addition
    with pytest.warns(UserWarning, match="cannot pair"):
        assert feeding_layers("no_such_model", lenet) == {}


def test_densities_are_the_masks():
    masks = {"a.weight": torch.tensor([True, False, False, False]), "b.weight": torch.ones(3, 2, dtype=torch.bool)}
    assert layer_densities(masks) == {"a.weight": 25.0, "b.weight": 100.0}


def test_lahc_trace_points():
    points = trace_points({"stages": {"search": {"algorithm": "lahc", "trace": lahc_trace()}}})
    assert points.step.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert points.accepted.sum() == sum(entry[2] for entry in TRACE)
    assert points.discarded.tolist() == [False] * 6 + [True]
    assert math.isnan(points.fitness[3])
    assert points.best.tolist() == [40.0, 40.0, 52.5, 52.5, 52.5, 55.0, 55.0]  # the discarded 70 does not count
    assert points.genomes == ("act1=swish;act2=srs;act3=tanhsoft;act4=acon",) * 7  # the report page lists them


def test_other_algorithms_plot_the_search_jobs(workspace, tmp_path):
    jobs = [{"stage": "baseline", "result": {"default": 10.0}},
            {"stage": "search", "genome": "act1=relu", "result": {"default": 30.0}},
            {"stage": "search", "genome": "act1=gelu", "result": None},
            {"stage": "search", "genome": "act1=elu", "result": {"default": 45.0}}]
    summary = {"stages": {"search": {"algorithm": "TPE", "trace": None}}, "jobs": jobs}
    points = trace_points(summary)
    assert points.accepted is None and not points.discarded.any()
    assert np.array_equal(points.fitness, [30.0, np.nan, 45.0], equal_nan=True)
    assert points.best.tolist() == [30.0, 30.0, 45.0]
    assert points.genomes == ("act1=relu", "act1=gelu", "act1=elu")
    (workspace / "summary.json").write_text(json.dumps(summary))
    assert plot_workspace(workspace, tmp_path / "tpe")[-1].stat().st_size > 5000


def test_asha_plots_its_rung_jobs():
    """ASHA's trace has no acceptance: its evaluations are the search jobs, every rung's."""
    jobs = [{"stage": "search", "variant": "asha-rung1", "genome": "act1=relu", "result": {"default": 50.0}},
            {"stage": "search", "variant": "asha-rung0", "genome": "act1=elu", "result": {"default": 40.0}}]
    trace = [{"id": 0, "trial": 0, "rung": 1, "epochs": 3, "genome": {"act1": "relu"}, "fitness": 50.0}]
    points = trace_points({"stages": {"search": {"algorithm": "asha", "trace": trace}}, "jobs": jobs})
    assert points.accepted is None and points.fitness.tolist() == [50.0, 40.0]


def test_missing_files_name_their_stage(workspace, tmp_path):
    (workspace / "final_safs.pt").rename(workspace / "final_stage1.pt")
    assert len(plot_workspace(workspace, tmp_path / "stage1")) == 3  # stage 1 alone is plotted too
    (workspace / "final_stage1.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"final_safs\.pt \(written by the final stage \(variant safs\)\)"):
        plot_workspace(workspace, tmp_path / "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "final_safs.pt").write_bytes((workspace / "summary.json").read_bytes())  # exists; summary does not
    with pytest.raises(FileNotFoundError, match=r"summary\.json \(written by the end of a run"):
        plot_workspace(empty, tmp_path / "none")
