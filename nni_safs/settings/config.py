"""The settings of one SAFS run (the tuner's ``classArgs``), validated up front.

Each key is defined once, here, in :class:`SafsConfig`; docs/configuration.md (one row per key,
checked by tests/test_config.py) and the experiment YAMLs follow it. Bad values fail before any
training starts, with a message that names the key, the value and what is allowed. Loading and
checking the settings imports no torch: the built-in models and datasets are registered with
their facts and imported when first built.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from nni_safs.settings.catalog import DATASETS, MODELS, model_facts
from nni_safs.settings.plugins import import_plugins

# the values a key may take; the modules that act on them dispatch on these names
OPTIMIZERS = ("sgd", "adam", "adamw", "tadam", "fromage")  # nni_safs.training.loop
SCHEDULERS = ("constant", "constant_warmup", "step_halving", "step", "cosine", "cosine_warm_restarts",
              "linear_warmup", "plateau")
PRECISIONS = ("auto", "fp32", "bf16")  # nni_safs.training.loop
DATA_LOADERS = ("auto", "tensor", "dataloader")  # nni_safs.data.tensors
SCOPES = ("layer", "global", "lamp")  # nni_safs.pruning
STAGE1_ALGORITHMS = ("lahc", "asha", "evolution", "tpe", "random")
OWN_STAGE1 = ("lahc", "asha")  # stage-1 algorithms of nni_safs.method; the others are NNI built-in tuners
HPO_PROMOTIONS = ("none", "asha")  # stage 2: every trial at hpo_epochs | successive halving (method/halving_study.py)
SEARCH_INITS = ("random", "uniform")
SEARCH_SCORES = ("best", "late_mean")
KEEP_EPOCHS = ("best", "last")


@dataclass
class SafsConfig:
    """Every knob of a SAFS run. Budgets are in epochs unless named otherwise."""

    plugins: list[str] = field(default_factory=list)  # your modules registering models/datasets/ops
    model: str = "lenet5"  # a name of nni_safs.models (lenet5, vgg16, vgg11, resnet18, resnet18_shortcut_act, ...)
    dataset: str = "mnist5k"  # a name of nni_safs.data (mnist5k, mnist, cifar10, imagenet16, synthetic)
    data_root: str | None = None  # folder of the dataset's files (not needed for mnist5k/synthetic)
    download: bool = False  # let torchvision download mnist/cifar10 into data_root
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. {num_classes: 120}, {normalization: reference}
    workspace: str = "workspace"  # where checkpoints, tuner state and results live
    seed: int = 0  # seeds data splits, dense training, pruning ties, the search
    val_fraction: float = 0.1  # share (0, 1) of the training files held out to score epochs and candidates, or a count;
    #   0 (with cv_folds >= 2): none held out, the reference's CIFAR-10 protocol (see cv_folds)
    cv_folds: int = 1  # >= 2: dense, baseline and final models trained on k folds of the train split, best fold kept;
    #   with val_fraction 0 the folds cover every training file and the other jobs train and validate on the last fold
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # fp32 | bf16 (autocast; weights stay fp32) | auto: bf16 on CUDA, fp32 on CPU
    data_loader: str = "auto"  # tensor (held, augmented on the device) | dataloader | auto: tensor on CUDA if it fits
    batch_size: int = 256
    num_workers: int = 0  # DataLoader worker processes per trial
    threads: int = 0  # torch CPU threads per trial; 0 keeps torch's default
    ratio: float = 0.99  # fraction of Conv/Linear weights pruned
    scope: str = "layer"  # layer (paper: same ratio per layer) | global | lamp
    train_hparams: dict[str, Any] | None = None  # dense/baseline/final hyperparameters; None: those registered with the model
    keep_epoch: str = "best"  # the weights a run keeps, tests and prunes: best (validation) | last (the reference's, in effect)
    dense_epochs: int = 200
    baseline_epochs: int = 200  # fine-tuning of the pruned ReLU net with train_hparams
    final_epochs: int = 200  # fine-tuning of the winner (and of each ablation)
    search_epochs: int = 80  # per stage-1 candidate; asha: the top rung's budget
    final_seeds: int = 1  # fine-tune the baseline and each final column with this many seeds (mean ± sd)
    search_data_fraction: float = 1.0  # part of the train split used by stage-1/stage-2 trials
    search_algorithm: str = "lahc"  # lahc | asha (multi-fidelity, docs/multi_fidelity.md) | evolution | tpe | random
    search_init: str = "random"  # LAHC start: random (paper) | uniform (every one-op genome first, best starts)
    search_score: str = "best"  # a candidate's score: best (paper: max val top-1 over epochs) | late_mean
    search_steps: int = 20  # LAHC: minimum steps; asha: genomes at the lowest rung; others: number of candidates
    search_min_epochs: int = 3  # asha: the lowest rung's budget is at least this (rungs: search_epochs / factor**k)
    search_reduction_factor: int = 3  # asha: a rung promotes its top 1/this, at this many times the epochs
    search_idle_fraction: float = 0.02  # LAHC stops once idle steps exceed this share of steps
    search_history: int = 3  # LAHC history length L
    max_search_steps: int = 100  # hard cap on stage-1 evaluations (not asha's)
    confirm_top: int = 0  # 0: stage 1's winner is the search's best (paper); N: the top N and the own activation re-scored
    confirm_epochs: int | None = None  # the confirmation's budget per run; None: search_epochs
    confirm_seeds: int = 2  # fine-tuning seeds each confirmed genome is scored over (mean)
    confirm_finalists: int | None = None  # searched genomes the first seed promotes to the others; None: all
    confirm_uniform: int = 0  # the search's best N one-op genomes re-scored too (where not among the top)
    op_choices: str | None = None  # catalog YAML with the stage-1 choices; None: search_spaces/activations.yaml
    hpo_tuner: str = "TPE"  # any NNI built-in tuner name for stage 2
    hpo_trials: int = 20  # per study; hpo_promotion asha: sets started at the lowest rung
    hpo_epochs: int = 80  # per stage-2 trial; hpo_promotion asha: the top rung's budget
    hpo_promotion: str = "none"  # none | asha: promote each study's best trials to longer budgets (docs/multi_fidelity.md)
    hpo_min_epochs: int = 3  # hpo_promotion asha: the lowest rung's budget is at least this
    hpo_reduction_factor: int = 3  # hpo_promotion asha: a rung promotes its top 1/this, at this many times the epochs
    hpo_space: str | None = None  # stage-2 space JSON; None: search_spaces/hpo_space.json
    hpo_warm_start: bool = False  # the SAFS study's tuner starts from the ablation study's finished trials
    hpo_default_first: bool = False  # each study's first trial: train_hparams (not the reference's design)
    hpo_ablation_best_first: bool = False  # the SAFS study's first trial: the ablation study's best so far

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SafsConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; valid settings: {sorted(known)}")
        config = cls(**dict(values))
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default value."""
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}

    @property
    def confirms(self) -> bool:
        """Whether stage 1's winner is confirmed against the own activation (else: the search's best)."""
        return self.confirm_top + self.confirm_uniform > 0

    @property
    def hparams(self) -> dict[str, Any]:
        """The dense/baseline fine-tuning hyperparameters in effect."""
        if self.train_hparams is not None:
            return dict(self.train_hparams)
        registered = model_facts(self.model).hparams
        if registered is None:
            raise ValueError(f"model {self.model!r} was registered without training hyperparameters: set "
                             "train_hparams, or pass hparams= to register_model")
        return dict(registered)

    def validate(self) -> None:
        if not isinstance(self.plugins, list) or not all(isinstance(m, str) for m in self.plugins):
            raise ValueError(f"plugins must be a list of module names, got {self.plugins!r}")
        import_plugins(self.plugins)  # before any name is checked: they may register it
        MODELS.check(self.model)
        DATASETS.check(self.dataset)
        _one_of("scope", self.scope, SCOPES)
        _one_of("search_algorithm", self.search_algorithm, STAGE1_ALGORITHMS)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("data_loader", self.data_loader, DATA_LOADERS)
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio!r}")
        _one_of("search_init", self.search_init, SEARCH_INITS)
        _one_of("search_score", self.search_score, SEARCH_SCORES)
        _one_of("keep_epoch", self.keep_epoch, KEEP_EPOCHS)
        _one_of("hpo_promotion", self.hpo_promotion, HPO_PROMOTIONS)
        if self.search_init != "random" and self.search_algorithm not in OWN_STAGE1:
            raise ValueError(f"search_init {self.search_init!r} needs search_algorithm {' or '.join(OWN_STAGE1)}, "
                             f"got {self.search_algorithm!r}")
        whole = isinstance(self.val_fraction, int) and not isinstance(self.val_fraction, bool) and self.val_fraction >= 1
        none_held = self.val_fraction == 0 and not isinstance(self.val_fraction, bool) and self.cv_folds != 1
        if not (whole or none_held or (isinstance(self.val_fraction, (int, float)) and 0.0 < self.val_fraction < 1.0)):
            raise ValueError(f"val_fraction must be a share in (0, 1), a whole number of images >= 1, or 0 with "
                             f"cv_folds >= 2, got {self.val_fraction!r}")
        if not 0.0 < self.search_data_fraction <= 1.0:
            raise ValueError(f"search_data_fraction must be in (0, 1], got {self.search_data_fraction!r}")
        if not 0.0 <= self.search_idle_fraction < 1.0:
            raise ValueError(f"search_idle_fraction must be in [0, 1), got {self.search_idle_fraction!r}")
        for key in ("batch_size", "dense_epochs", "baseline_epochs", "final_epochs", "final_seeds", "search_epochs",
                    "search_steps", "search_min_epochs", "search_reduction_factor", "search_history",
                    "max_search_steps", "hpo_trials", "hpo_epochs", "hpo_min_epochs", "hpo_reduction_factor",
                    "confirm_seeds", "cv_folds",
                    *(["confirm_epochs"] if self.confirm_epochs is not None else []),
                    *(["confirm_finalists"] if self.confirm_finalists is not None else [])):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.max_search_steps < self.search_steps and self.search_algorithm != "asha":
            raise ValueError(f"max_search_steps ({self.max_search_steps}) must be >= search_steps "
                             f"({self.search_steps})")
        for key in ("num_workers", "threads", "confirm_top", "confirm_uniform"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
        if self.search_algorithm == "asha":
            self._validate_asha()
        if self.hpo_promotion == "asha":
            _check_rungs(("hpo_trials", self.hpo_trials), ("hpo_min_epochs", self.hpo_min_epochs),
                         ("hpo_epochs", self.hpo_epochs), ("hpo_reduction_factor", self.hpo_reduction_factor),
                         "hpo_promotion 'asha'", "trial")
        hp = self.hparams
        _one_of("train_hparams.optimizer", hp.get("optimizer"), OPTIMIZERS)
        _one_of("train_hparams.scheduler", hp.get("scheduler", "constant"), SCHEDULERS)
        if not isinstance(hp.get("lr"), (int, float)) or not hp["lr"] > 0:
            raise ValueError(f"train_hparams.lr must be a positive number, got {hp.get('lr')!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


    def _validate_asha(self) -> None:
        """ASHA's top rung (``search_epochs``) is its confirmation, and it must be reachable."""
        if self.confirms:
            raise ValueError(f"search_algorithm 'asha' scores its top rung at search_epochs, which replaces the "
                             f"confirmation: set confirm_top and confirm_uniform to 0 (got {self.confirm_top} and "
                             f"{self.confirm_uniform})")
        _check_rungs(("search_steps", self.search_steps), ("search_min_epochs", self.search_min_epochs),
                     ("search_epochs", self.search_epochs), ("search_reduction_factor", self.search_reduction_factor),
                     "asha", "genome")


def _check_rungs(starts: tuple[str, int], low: tuple[str, int], top: tuple[str, int], factor: tuple[str, int],
                 switch: str, unit: str) -> None:
    """Successive halving's ``(key, value)`` settings make a ladder that a ``unit`` can climb: a
    factor >= 2, a lowest rung no longer than the top one, enough starts to promote one to the top."""
    if factor[1] < 2:
        raise ValueError(f"{factor[0]} must be >= 2, got {factor[1]!r}")
    if low[1] > top[1]:
        raise ValueError(f"{low[0]} ({low[1]}) must be <= {top[0]} ({top[1]}), the top rung's budget")
    rungs, epochs = 1, top[1] / factor[1]
    while epochs >= low[1]:
        rungs, epochs = rungs + 1, epochs / factor[1]
    needed = factor[1] ** (rungs - 1)
    if starts[1] < needed:
        raise ValueError(f"{starts[0]} must be >= {needed} with {switch} ({rungs} rungs: {factor[0]} ** "
                         f"{rungs - 1}), so a {unit} can reach the top rung, got {starts[1]!r}")


def _one_of(key: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
