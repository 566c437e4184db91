"""The reference SAFS's recipes, pinned: each model's registered fine-tuning, what the four paper
configs resolve to, the stage-2 space against the reference's SMAC space, each scheduler's
learning-rate curve against the reference's formula, TAdam's and Fromage's steps against steps
worked by hand from their papers, the reference's validation protocols and input pipelines, and
the reference's networks (``vgg11``, ``resnet18_shortcut_act``).

Line numbers cite automl/SAFS (``safs/``) as docs/fidelity.md does."""
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from nni_safs.models import build_model, model_facts
from nni_safs.settings.config import SafsConfig
from nni_safs.training.loop import build_optimizer, build_scheduler, fine_tune
from nni_safs.training.optimizers import Fromage, TAdam

REPO = Path(__file__).parents[1]
PAPER_CONFIGS = ["lenet5_mnist_paper", "vgg16_safs", "resnet18_safs", "efficientnet_b0_safs"]
SGD = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}
LENET5 = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "constant"}


def paper_config(name: str) -> SafsConfig:
    shipped = yaml.safe_load((REPO / "experiment_configs" / f"{name}.yml").read_text())
    return SafsConfig.from_dict(shipped["tuner"]["classArgs"])


@pytest.mark.parametrize("model, recipe", [
    ("lenet5", {**LENET5, "beta2": 0.99}),  # main.py 150-153, 187-188; settings.py 142-144: betas (0.9, 0.99)
    ("lenet5_padded", LENET5),  # the embedded default's: torch's beta2 0.999, a named departure
    ("vgg16", {**SGD, "scheduler": "step_halving", "step_size": 20}),  # main.py 167-170, 195-196
    ("vgg11", {**SGD, "scheduler": "step_halving", "step_size": 20}),
    ("resnet18", {**SGD, "scheduler": "plateau"}),  # main.py 158-161 (Optim_params lr 0.001), 191-192
    ("resnet18_shortcut_act", {**SGD, "scheduler": "plateau"}),
    ("efficientnet_b0", {**SGD, "scheduler": "cosine_warm_restarts"}),  # main.py 175-178, 199-200
])
def test_each_model_trains_with_the_reference_recipe(model, recipe):
    assert dict(model_facts(model).hparams) == recipe


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_train_with_their_models_reference_recipe(name):
    """No paper config overrides its model's registered recipe (EfficientNet-B0's did, with step halving)."""
    shipped = yaml.safe_load((REPO / "experiment_configs" / f"{name}.yml").read_text())
    assert "train_hparams" not in shipped["tuner"]["classArgs"]
    config = paper_config(name)
    assert config.hparams == dict(model_facts(config.model).hparams)
    assert config.hpo_space is None and not config.hpo_default_first  # the reference's space, no default first
    assert (config.precision, config.ratio, config.scope, config.batch_size) == ("fp32", 0.99, "layer", 256)
    assert (config.dense_epochs, config.baseline_epochs, config.final_epochs) == (200, 200, 200)
    assert (config.search_epochs, config.hpo_epochs, config.hpo_trials) == (80, 80, 20)
    assert (config.search_algorithm, config.search_steps, config.search_history) == ("lahc", 20, 3)
    assert (config.confirm_top, config.confirm_uniform, config.final_seeds) == (0, 0, 1)


# the reference's stage-2 space, transcribed from smac_opt.py 68-112 (SMAC's ConfigSpace) and the
# optimizers settings.py 138-149 builds from it: every hyperparameter is conditional on optim_name
REFERENCE_OPTIMIZERS = ["SGD", "TAdam", "Fromage", "Adam"]
REFERENCE_HYPERPARAMETERS = {
    "SGD": {"lr_SGD": ("log-uniform", 1e-4, 1e-1), "momentum": ("uniform", 0.1, 0.999),
            "wd_SGD": ("uniform", 1e-5, 1e-1),
            "lr_scheduler": ("choice", ["VGG_lr_scheduler", "CosineWR", "Constant", "Cosine", "Step", "Linear",
                                        "ReduceLROnPlateau"])},
    "TAdam": {"lr_TAdam": ("log-uniform", 1e-4, 1e-1), "wd_TAdam": ("uniform", 1e-5, 1e-1), "betas": (0.9, 0.99)},
    "Fromage": {"lr_Fromage": ("log-uniform", 1e-4, 1e-1)},  # Fromage(params, lr): no weight decay
    "Adam": {"lr_Adam": ("log-uniform", 1e-4, 1e-1), "wd_Adam": ("uniform", 1e-5, 1e-1), "betas": (0.9, 0.99)},
}
# our names for the reference's (nni_safs.training.loop); its "Constant" has no branch in
# Set_Lr_Policy (utility.py 336-383), so it would crash: ours is LR_SCHEDULER_CONFIG's "Constant"
OPTIMIZER_NAMES = {"SGD": "sgd", "TAdam": "tadam", "Fromage": "fromage", "Adam": "adam"}
SCHEDULER_NAMES = {"VGG_lr_scheduler": "step_halving", "CosineWR": "cosine_warm_restarts",
                   "Constant": "constant_warmup", "Cosine": "cosine", "Step": "step", "Linear": "linear_warmup",
                   "ReduceLROnPlateau": "plateau"}


def as_reference(branch: dict) -> dict:
    """One optimizer branch of our space in the transcription's terms."""
    name = {v: k for k, v in OPTIMIZER_NAMES.items()}[branch["_name"]]
    kinds = {"loguniform": "log-uniform", "uniform": "uniform"}
    out = {}
    for key, spec in branch.items():
        if key == "lr":
            out[f"lr_{name}"] = (kinds[spec["_type"]], *spec["_value"])
        elif key == "weight_decay":
            out[f"wd_{name}"] = (kinds[spec["_type"]], *spec["_value"])
        elif key == "momentum":
            out["momentum"] = (kinds[spec["_type"]], *spec["_value"])
        elif key == "scheduler":
            names = {v: k for k, v in SCHEDULER_NAMES.items()}
            out["lr_scheduler"] = ("choice", [names[value] for value in spec["_value"]])
        elif key == "beta2":
            assert spec["_type"] == "choice" and len(spec["_value"]) == 1, key
            out["betas"] = (0.9, spec["_value"][0])
        elif key != "_name":
            raise AssertionError(f"{name}: {key} is not in the reference's space")
    return out


def test_the_stage2_space_is_the_references_item_by_item():
    from nni_safs.method.spaces import load_hpo_space
    space = load_hpo_space(REPO / "search_spaces" / "hpo_space.json")
    branches = space["optimizer"]["_value"]
    assert [OPTIMIZER_NAMES[name] for name in REFERENCE_OPTIMIZERS] == [b["_name"] for b in branches]
    for reference_name, branch in zip(REFERENCE_OPTIMIZERS, branches):
        ours = as_reference(branch)
        for key, expected in REFERENCE_HYPERPARAMETERS[reference_name].items():
            assert ours.pop(key, None) == expected, (reference_name, key)
        assert not ours, (reference_name, ours)  # nothing the reference lacks
    # Adam, TAdam and Fromage run at a constant rate: no scheduler (smac_opt.py 130-143: enable_scheduler False)
    assert [("scheduler" in b) for b in branches] == [True, False, False, False]


def test_stage2_optimizers_are_built_as_the_reference_builds_them():
    from nni_safs.method.spaces import flatten_hparams, load_hpo_space
    space = load_hpo_space(REPO / "search_spaces" / "hpo_space.json")
    params = [nn.Parameter(torch.zeros(1))]
    built = {}
    for branch in space["optimizer"]["_value"]:
        point = {key: (spec["_value"][0] if isinstance(spec, dict) else spec) for key, spec in branch.items()
                 if key != "_name"}
        built[branch["_name"]] = build_optimizer(params, flatten_hparams({"optimizer": {"_name": branch["_name"],
                                                                                         **point}}))
    assert built["adam"].defaults["betas"] == built["tadam"].defaults["betas"] == (0.9, 0.99)
    assert built["fromage"].defaults["weight_decay"] == 0.0  # settings.py 148-149: Fromage(params, lr)
    paper_adam = build_optimizer(params, paper_config("lenet5_mnist_paper").hparams)
    assert paper_adam.defaults["betas"] == (0.9, 0.99)  # LeNet-5's dense, baseline and stage-1 Adam too
    embedded = build_optimizer(params, SafsConfig(model="lenet5_padded").hparams)
    assert embedded.defaults["betas"] == (0.9, 0.999)  # the embedded default's measured setting


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
    ("cosine", lambda e, lr: lr * (1 + math.cos(math.pi * e / EPOCHS)) / 2),  # CosineAnnealingLR, T_max = budget
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


@pytest.mark.parametrize("name, held_out, folds, options", [
    # utility.py 42-44: MNIST holds out 10,000; pruning_lib.py 212-213, 192: no folds for LeNet-5
    ("lenet5_mnist_paper", 10000, 1, {"normalization": "reference"}),
    # cross_validation.py 50-54: KFold over the whole CIFAR-10 training set; the 10,000 of
    # utility.py 149-151 are replaced by the folds' loaders (setup_dataflow) and never used
    ("vgg16_safs", 0, 3, {"normalization": "reference"}),
    ("resnet18_safs", 0, 3, {"normalization": "reference"}),
    # utility.py 94-99, pruning_lib.py 212: ImageNet16 validates on val_data, its test split too, no folds
    ("efficientnet_b0_safs", 0.1, 1, {"num_classes": 1000, "augmentation": "mirrored_copy",
                                      "normalization": "reference", "validation": "val_data"}),
])
def test_paper_configs_use_the_reference_validation_protocol(name, held_out, folds, options):
    config = paper_config(name)
    assert (config.val_fraction, config.cv_folds, config.dataset_options) == (held_out, folds, options)


def test_no_held_out_split_cross_validates_over_every_training_file(tmp_path):
    """val_fraction 0 with cv_folds 3, the reference's CIFAR-10 protocol, on real digits: the folds
    cover every training file; the dense, baseline and final models keep their best fold and its own
    score; the other jobs train and validate on the last fold."""
    from nni_safs.data import build_dataset
    from nni_safs.data.splits import cross_validation_folds
    from nni_safs.method.contract import JobSpec, Stage
    from nni_safs.storage.checkpoints import load_checkpoint
    from nni_safs.storage.workspace import Workspace, open_workspace
    from nni_safs.training.jobs import load_data, run_job
    with pytest.raises(ValueError, match="or 0 with cv_folds >= 2"):
        SafsConfig.from_dict({"val_fraction": 0})
    config = open_workspace(SafsConfig(model="lenet5", dataset="mnist5k", device="cpu", scope="lamp", ratio=0.9,
                                       dense_epochs=1, batch_size=128, val_fraction=0, cv_folds=3,
                                       workspace=str(tmp_path / "ws")))
    everything = build_dataset("mnist5k", seed=0, val_fraction=0)
    assert len(everything.val) == 0 and len(everything.train) == 4000  # the 1,000 test digits apart
    last = cross_validation_folds(everything, 3, seed=0)[-1]
    run = load_data(config)
    assert run.train.indices == last.train.indices and run.val.indices == last.val.indices
    assert len(run.train) + len(run.val) == 4000
    prepared = run_job(JobSpec(0, Stage.PREPARE, "", config.workspace))
    dense = load_checkpoint(Workspace(config).dense_path, Workspace(config).dense_meta())
    assert len(dense["fold_val_accs"]) == 3 and dense["best_val_acc"] == max(dense["fold_val_accs"])
    assert prepared.metrics["dense_test_acc"] > 50
    final = run_job(JobSpec(1, Stage.FINAL, "safs", config.workspace, hparams=config.hparams, epochs=1))
    assert len(final.metrics["fold_val_accs"]) == 3 and final.score == max(final.metrics["fold_val_accs"])
    search = run_job(JobSpec(2, Stage.SEARCH, "lahc", config.workspace, hparams=config.hparams, epochs=1))
    assert search.metrics["fold_val_accs"] == [] and search.metrics["test_acc"] > 20


def test_the_reference_imagenet16_pipeline(tmp_path):
    """coustum_dataset.py 38-69, 184: x / 255 minus the files' mean image, no std; the training
    set followed by its mirrored copy; no random augmentation; utility.py 94-99: val is val_data."""
    import pickle
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from nni_safs.data import build_dataset
    from nni_safs.data.samples import write_imagenet16, write_pickle
    write_imagenet16(tmp_path, per_batch=6, val_ids=range(100, 112))
    mean = torch.arange(768, dtype=torch.float64) % 200  # the files' mean image, channel-major, 0..255
    for k in range(10):
        batch = pickle.loads((tmp_path / f"train_data_batch_{k + 1}").read_bytes())
        write_pickle(tmp_path / f"train_data_batch_{k + 1}", {**batch, "mean": mean.numpy()})
    splits = build_dataset("imagenet16", root=tmp_path, seed=0, augmentation="mirrored_copy",
                           normalization="reference", validation="val_data")
    assert (len(splits.train), len(splits.val)) == (120, 12) and splits.val is splits.test
    assert splits.augmentation is None and splits.train_plain is splits.train
    raw = [row for k in range(10) for row in pickle.loads((tmp_path / f"train_data_batch_{k + 1}").read_bytes())["data"]]
    seen = set()
    for index in range(60):
        image, _ = splits.train[index]
        sample = round(float(image[0, 0, 0]) * 255)  # the red plane is the sample id; mean[0] is 0
        expected = (torch.as_tensor(raw[sample], dtype=torch.float32) / 255 - mean.float() / 255).view(3, 16, 16)
        assert torch.allclose(image, expected, atol=1e-6)
        assert torch.equal(splits.train[60 + index][0], torch.flip(image, dims=[-1]))
        seen.add(sample)
    assert seen == set(range(60))  # every training image, once, and its mirror
    assert torch.equal(splits.train[7][0], splits.train[7][0])  # nothing drawn at random
    val = pickle.loads((tmp_path / "val_data").read_bytes())["data"][0]
    assert torch.allclose(splits.val[0][0], (torch.as_tensor(val, dtype=torch.float32) / 255
                                             - mean.float() / 255).view(3, 16, 16), atol=1e-6)
    with pytest.raises(ValueError, match="normalization 'reference' needs augmentation 'mirrored_copy'"):
        build_dataset("imagenet16", root=tmp_path, augmentation="resized_crop", normalization="reference")


@pytest.mark.parametrize("dataset, std", [("mnist", (1.0,)), ("cifar10", (0.2023, 0.1994, 0.2010))])
def test_the_reference_normalization(tmp_path, monkeypatch, dataset, std):
    """utility.py 31-38: MNIST only ToTensor; 135-144: CIFAR-10 divided by (0.2023, 0.1994, 0.2010)."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from torchvision.datasets import CIFAR10

    from nni_safs.data import build_dataset
    from nni_safs.data.samples import write_cifar10, write_mnist
    from nni_safs.data.vision import CIFAR10_MEAN
    if dataset == "mnist":
        write_mnist(tmp_path, train=20, test=10)
    else:  # torchvision checks the official md5s, which fakes cannot match: point them at the fakes
        md5 = write_cifar10(tmp_path, per_batch=4, test_ids=range(100, 110))
        monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
        monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5[CIFAR10.meta["filename"]]})
    standard = build_dataset(dataset, root=tmp_path, seed=0)
    reference = build_dataset(dataset, root=tmp_path, seed=0, normalization="reference")
    mean = torch.tensor((0.0,) if dataset == "mnist" else CIFAR10_MEAN).view(-1, 1, 1)
    pixels = reference.test[0][0] * torch.tensor(std).view(-1, 1, 1) + mean  # ToTensor's [0, 1] values
    assert pixels.min() > -1e-6 and pixels.max() < 1 + 1e-6
    assert not torch.allclose(reference.test[0][0], standard.test[0][0])
    assert torch.allclose((pixels * 255).round(), pixels * 255, atol=1e-3)
    if dataset == "mnist":
        assert torch.equal(reference.test[0][0], pixels)  # not normalized at all
    else:
        assert reference.augmentation.std == std


def test_vgg11_is_the_reference_network():
    """models/model.py 8: the reference's "VGG-16" is VGG('VGG11'): 8 conv (with bias) + BN + act,
    5 max-pools, Linear(512, 10) (vgg.py 41, 119, 141-146); its 7 unwired activation keys are no slots."""
    from nni_safs.models.activations import slots
    model = build_model("vgg11")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5 and len(slots(model)) == 8
    assert model.classifier.in_features == 512 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert len(slots(build_model("vgg16"))) == 13


def test_resnet18_shortcut_act_places_slots_as_the_reference():
    """resnet.py 47-74, 207-216: each block adds act(shortcut(x)) to conv-bn-act-conv-bn, with no
    activation after the addition; the same 17 slots as resnet18."""
    from nni_safs.models.activations import slots
    torch.manual_seed(0)
    model = build_model("resnet18_shortcut_act", act="tanh").eval()
    assert len(slots(model)) == len(slots(build_model("resnet18"))) == 17
    block = model.layer2[0]  # a projection shortcut
    x = torch.randn(2, 64, 8, 8)
    branch = block.bn2(block.conv2(torch.tanh(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), branch + torch.tanh(block.shortcut(x)), atol=1e-6)
    identity = model.layer1[1]
    y = torch.randn(2, 64, 8, 8)
    branch = identity.bn2(identity.conv2(torch.tanh(identity.bn1(identity.conv1(y)))))
    assert torch.allclose(identity(y), branch + torch.tanh(y), atol=1e-6)
    assert (identity(y) < -1).any()  # nothing squashes the sum: no activation after the addition


def test_keep_epoch_last_keeps_the_last_epochs_weights(tmp_path):
    """train_lib.py 26, 68-70, 95: the reference's "best" state_dict aliases the live weights, so it
    saves and tests the last epoch's; ``keep_epoch: last`` does the same, ``best`` (ours) keeps the
    best validation epoch's. The score stays the best validation top-1 (the reference's acc_best)."""
    from nni_safs.data.tensors import build_loaders
    from nni_safs.method.contract import JobSpec, Stage
    from nni_safs.storage.checkpoints import load_checkpoint
    from nni_safs.storage.workspace import open_workspace
    from nni_safs.training.jobs import load_data, new_model, run_candidate, run_job
    from nni_safs.training.loop import evaluate
    with pytest.raises(ValueError, match="unknown keep_epoch 'first'; valid: best, last"):
        SafsConfig.from_dict({"keep_epoch": "first"})
    hparams = {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9}  # its validation top-1 peaks at epoch 2 of 3
    for keep in ("best", "last"):
        config = open_workspace(SafsConfig(model="lenet5", dataset="mnist5k", device="cpu", scope="lamp", ratio=0.9,
                                           dense_epochs=1, batch_size=128, keep_epoch=keep,
                                           workspace=str(tmp_path / keep)))
        run_job(JobSpec(0, Stage.PREPARE, "", config.workspace))
        out = run_candidate(config, None, hparams, 3, False, save_as="kept.pt")
        accs = [epoch["val_acc"] for epoch in out["history"]]
        assert max(accs) > accs[-1] and out["val_acc"] == max(accs)
        splits = load_data(config)
        model = new_model(config, splits)
        model.load_state_dict(load_checkpoint(tmp_path / keep / "kept.pt")["state"])
        _, val, test = build_loaders(splits, 128, 0, "cpu", "dataloader")
        assert evaluate(model, val)[0] == (accs[-1] if keep == "last" else max(accs))
        assert evaluate(model, test)[0] == out["test_acc"]
