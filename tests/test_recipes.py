"""The reference SAFS's recipes, pinned: each model's registered fine-tuning, each scheduler's
learning-rate curve against the reference's formula, and TAdam's and Fromage's steps against
steps worked by hand from their papers."""
import math

import pytest
import torch
from torch import nn

from nni_safs.models import build_model, model_facts
from nni_safs.training.loop import build_optimizer, build_scheduler, fine_tune
from nni_safs.training.optimizers import Fromage, TAdam

SGD = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}


@pytest.mark.parametrize("model, recipe", [
    ("lenet5", {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "constant"}),
    ("vgg16", {**SGD, "scheduler": "step_halving", "step_size": 20}),
    ("resnet18", {**SGD, "scheduler": "plateau"}),
    ("efficientnet_b0", {**SGD, "scheduler": "cosine_warm_restarts"}),
])
def test_each_model_trains_with_the_reference_recipe(model, recipe):
    assert dict(model_facts(model).hparams) == recipe


def test_the_reference_lenet5_has_no_padding_and_efficientnet_a_stride_1_stem():
    lenet = build_model("lenet5")
    assert lenet.conv1.padding == (0, 0) and lenet.fc1.in_features == 256  # fc 256-120-84-10
    padded = build_model("lenet5_padded")  # the embedded default's, a named departure
    assert padded.conv1.padding == (2, 2) and padded.fc1.in_features == 400
    assert padded(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    efficientnet = build_model("efficientnet_b0", num_classes=10)
    assert efficientnet.features[0][0].stride == (1, 1)
    with torch.no_grad():
        maps = efficientnet.features[:4](torch.zeros(1, 3, 16, 16))
    assert maps.shape[-1] == 4  # the fourth stage still sees 4x4 maps (1x1 with ImageNet's stride-2 stem)


def lr_curve(hparams, epochs, losses=None):
    """The learning rate of each epoch, the scheduler stepped after each as fine_tune does."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=hparams["lr"])
    scheduler = build_scheduler(optimizer, hparams, epochs)
    curve = []
    for epoch in range(epochs):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(losses[epoch])
        elif scheduler is not None:
            scheduler.step()
    return curve


EPOCHS = 80


def restart_cosine(epoch, lr, period, floor=5e-5):
    return floor + (lr - floor) * (1 + math.cos(math.pi * (epoch % period) / period)) / 2


@pytest.mark.parametrize("scheduler, expected", [
    ("constant", lambda e, lr: lr),
    ("constant_warmup", lambda e, lr: lr * 0.1 if e < 5 else lr),  # the reference's "Constant"
    ("step_halving", lambda e, lr: lr * 0.5 ** (e // 20)),  # "VGG": halve every 20 epochs
    ("step", lambda e, lr: lr * 0.1 ** (e // (EPOCHS // 4))),  # decay every epochs / 4
    ("cosine_warm_restarts", lambda e, lr: restart_cosine(e, lr, EPOCHS // 4)),  # T_0 = epochs / 4, eta_min 5e-5
    ("linear_warmup", lambda e, lr: lr * (0.1 + 0.9 * min(e, 5) / 5)),  # warm-up over 5 steps
])
def test_each_scheduler_follows_the_reference_formula(scheduler, expected):
    lr = 0.05
    curve = lr_curve({"lr": lr, "scheduler": scheduler}, EPOCHS)
    assert curve == pytest.approx([expected(e, lr) for e in range(EPOCHS)], rel=1e-6)


def test_plateau_cuts_by_0_05_after_2_epochs_without_a_lower_training_loss():
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85]
    curve = lr_curve({"lr": 0.1, "scheduler": "plateau"}, len(losses), losses)
    # best 0.9 at epoch 1; epochs 2, 3 and 4 do not beat it: the third bad epoch cuts (patience 2)
    assert curve == pytest.approx([0.1] * 5 + [0.005] * 4 + [0.00025])


def test_fine_tune_steps_plateau_on_the_training_loss():
    """Validation accuracy that never improves does not cut the rate; only the training loss counts."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = nn.Linear(4, 2)
    result = fine_tune(model, [(x, y)], [(x, y)], {"optimizer": "sgd", "lr": 0.1, "scheduler": "plateau"}, 6)
    losses = [r.train_loss for r in result.history]
    assert all(b < a for a, b in zip(losses, losses[1:]))  # a falling loss: no cut
    assert [r.lr for r in result.history] == [0.1] * 6


def test_stage2_adam_uses_the_reference_betas():
    params = [nn.Parameter(torch.zeros(1))]
    assert build_optimizer(params, {"optimizer": "adam", "lr": 1e-3, "beta2": 0.99}).defaults["betas"] == (0.9, 0.99)
    assert build_optimizer(params, {"optimizer": "adam", "lr": 1e-3}).defaults["betas"] == (0.9, 0.999)
    assert isinstance(build_optimizer(params, {"optimizer": "tadam", "lr": 1e-3}), TAdam)
    assert isinstance(build_optimizer(params, {"optimizer": "fromage", "lr": 1e-3}), Fromage)


def step(optimizer_class, start, grads, **kwargs):
    p = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = optimizer_class([p], **kwargs)
    for grad in grads:
        p.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    return p.detach().tolist()


def test_tadam_steps_as_worked_by_hand():
    # d = 2, dof 2, beta1 0.9, beta2 0.999, W_0 = 9, m_0 = v_0 = 0, eps 1e-8, lr 0.1
    # step 1, g = (1, -2): sum((g - 0)^2 / (0 + eps)) = 5e8, w = 4 / (2 + 5e8) = 7.99999968e-9;
    #   m = w g / (9 + w); v = 0.001 g^2; step = lr / 0.1 * m / (sqrt(v / 0.001) + eps) = m / (|g| + eps)
    w1 = 4 / (2 + 5 / 1e-8)
    m1 = [w1 * g / (9 + w1) for g in (1.0, -2.0)]
    p1 = [x - m / (abs(g) + 1e-8) for x, m, g in zip((0.5, 0.5), m1, (1.0, -2.0))]
    assert step(TAdam, [0.5, 0.5], [[1.0, -2.0]], lr=0.1) == pytest.approx(p1, rel=1e-12)
    # step 2, g = (1, -2) again: the distance to m1 over v1 + eps is ~2, so w2 ~ 1: m moves towards g
    v1 = [0.001 * g * g for g in (1.0, -2.0)]
    distance = sum((g - m) ** 2 / (v + 1e-8) for g, m, v in zip((1.0, -2.0), m1, v1))
    w2 = 4 / (2 + distance)
    W1 = (2 * 0.9 - 1) / 0.9 * 9 + w1
    m2 = [(W1 * m + w2 * g) / (W1 + w2) for m, g in zip(m1, (1.0, -2.0))]
    v2 = [0.999 * v + 0.001 * g * g for v, g in zip(v1, (1.0, -2.0))]
    p2 = [x - 0.1 / (1 - 0.9 ** 2) * m / (math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8) for x, m, v in zip(p1, m2, v2)]
    assert step(TAdam, [0.5, 0.5], [[1.0, -2.0]] * 2, lr=0.1) == pytest.approx(p2, rel=1e-12)


def test_tadam_barely_moves_its_mean_for_an_outlier_gradient():
    p = nn.Parameter(torch.zeros(100, dtype=torch.float64))
    optimizer = TAdam([p], lr=0.01)
    for _ in range(50):
        p.grad = torch.ones(100, dtype=torch.float64)
        optimizer.step()
    before = optimizer.state[p]["exp_avg"].clone()
    p.grad = torch.full((100,), 1000.0, dtype=torch.float64)  # an outlier
    optimizer.step()
    assert (optimizer.state[p]["exp_avg"] - before).abs().max() < 0.01  # Adam's mean would move by ~100


def test_fromage_steps_as_worked_by_hand():
    # p = (3, 4), |p| = 5; g = (0, 2), |g| = 2; lr 0.1: p - 0.1 * 5 / 2 * g = (3, 3.5), then / sqrt(1.01)
    assert step(Fromage, [3.0, 4.0], [[0.0, 2.0]], lr=0.1) == pytest.approx(
        [3 / math.sqrt(1.01), 3.5 / math.sqrt(1.01)], rel=1e-12)
    # a zero tensor takes a plain gradient step (then the same shrink)
    assert step(Fromage, [0.0, 0.0], [[1.0, -1.0]], lr=0.1) == pytest.approx(
        [-0.1 / math.sqrt(1.01), 0.1 / math.sqrt(1.01)], rel=1e-12)


@pytest.mark.parametrize("name", ["tadam", "fromage"])
def test_tadam_and_fromage_train_a_model_with_masks_held(name):
    from nni_safs.pruning import magnitude_prune
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    masks = magnitude_prune(model, 0.5, "layer")
    result = fine_tune(model, [(x, y)], [(x, y)], {"optimizer": name, "lr": 0.05}, 30, masks=masks)
    assert result.best_val_acc > 80  # learning, far above chance (50)
    for layer_name, mask in masks.items():
        assert (model.get_parameter(layer_name)[~mask.bool()] == 0).all()


def test_cross_validation_folds_partition_the_train_split_and_validate_unaugmented():
    from nni_safs.data import build_dataset
    from nni_safs.data.splits import cross_validation_folds
    splits = build_dataset("synthetic", seed=0, val_fraction=0.1)
    folds = cross_validation_folds(splits, 3, seed=0)
    held = [fold.val.indices for fold in folds]
    assert sorted(i for share in held for i in share) == list(range(len(splits.train)))  # each sample held once
    for fold, share in zip(folds, held):
        assert not set(fold.train.indices) & set(share)
        assert len(fold.train) + len(share) == len(splits.train) and fold.test is splits.test
        image, label = fold.val[0]
        assert torch.equal(image, splits.train_plain[share[0]][0]) and label == splits.train_plain[share[0]][1]
    assert [f.val.indices for f in cross_validation_folds(splits, 3, seed=0)] == held  # seeded
    with pytest.raises(ValueError, match="folds >= 2"):
        cross_validation_folds(splits, 1, seed=0)


def test_cv_folds_trains_dense_and_final_models_per_fold_keeping_the_best(tmp_path):
    """The reference's protocol (3-fold cross-validation of the dense and final models), on real digits."""
    from nni_safs.method.contract import JobSpec, Stage
    from nni_safs.settings.config import SafsConfig
    from nni_safs.storage.checkpoints import load_checkpoint
    from nni_safs.storage.workspace import Workspace, open_workspace
    from nni_safs.training.jobs import run_job
    config = open_workspace(SafsConfig(model="lenet5", dataset="mnist5k", device="cpu", scope="lamp", ratio=0.9,
                                       dense_epochs=2, batch_size=128, cv_folds=3, workspace=str(tmp_path / "ws")))
    prepared = run_job(JobSpec(0, Stage.PREPARE, "", config.workspace))
    dense = load_checkpoint(Workspace(config).dense_path, Workspace(config).dense_meta())
    assert len(dense["fold_val_accs"]) == 3 and dense["best_val_acc"] == max(dense["fold_val_accs"])
    assert prepared.metrics["dense_test_acc"] > 50  # ten classes: chance is 10 %
    final = run_job(JobSpec(1, Stage.FINAL, "safs", config.workspace, hparams=config.hparams, epochs=1))
    search = run_job(JobSpec(2, Stage.SEARCH, "lahc", config.workspace, hparams=config.hparams, epochs=1))
    assert len(final.metrics["fold_val_accs"]) == 3 and search.metrics["fold_val_accs"] == []  # search: one run
    assert final.metrics["test_acc"] > 30
    with pytest.raises(ValueError, match="cv_folds must be a positive integer"):
        SafsConfig.from_dict({"cv_folds": 0})


@pytest.mark.parametrize("name", ["lenet5_mnist_paper", "vgg16_safs", "resnet18_safs", "efficientnet_b0_safs"])
def test_paper_configs_use_the_reference_validation_protocol(name):
    from pathlib import Path

    import yaml

    from nni_safs.settings.config import SafsConfig
    shipped = yaml.safe_load((Path(__file__).parents[1] / "experiment_configs" / f"{name}.yml").read_text())
    config = SafsConfig.from_dict(shipped["tuner"]["classArgs"])
    assert (config.val_fraction, config.cv_folds, config.precision) == (10000, 3, "fp32")
