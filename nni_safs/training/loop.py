"""Fine-tuning and evaluation, driven by a flat hyperparameter dict (the stage-2 space).

Hyperparameters (``hparams``), every key optional except ``optimizer`` and ``lr``:

* ``optimizer``: ``sgd`` | ``adam`` | ``adamw`` | ``tadam`` | ``fromage`` (the last two:
  :mod:`nni_safs.training.optimizers`); ``lr``; ``weight_decay`` (default 0); ``momentum`` (sgd only,
  default 0.9); ``beta2`` (adam, adamw, tadam; default 0.999, torch's: the reference builds every Adam
  and TAdam with 0.99, which the paper recipes and ``search_spaces/hpo_space.json`` set)
* ``scheduler`` (stepped once per epoch), as the reference SAFS defines them:

  ============================ ===================================================================
  ``constant`` (default)       no schedule
  ``constant_warmup``          the reference's "Constant": lr x 0.1 for the first 5 epochs, then lr
  ``step_halving``             the reference's "VGG": x 0.5 every ``step_size`` epochs (default 20)
  ``step``                     x 0.1 every ``step_size`` epochs (default a quarter of the budget)
  ``cosine``                   the reference's "Cosine": annealing to 0 over the budget
  ``cosine_warm_restarts``     restarts every quarter of the budget, down to 5e-5
  ``linear_warmup``            lr x 0.1 rising linearly to lr over the first 5 epochs
  ``plateau``                  x 0.05 when the training loss has not fallen for 2 epochs
  ============================ ===================================================================

The best epoch on validation is kept as a deep copy (the reference code aliased the live
weights and so saved the last epoch). A loss that turns NaN/inf ends the run as *diverged*
instead of raising, so one bad candidate cannot crash a search.

How the arithmetic runs is separate from what is trained: ``precision`` (:data:`PRECISIONS`)
chooses bf16 autocast (forward and loss in bf16 where safe; weights, gradients and optimizer
state stay float32, so masks hold exactly) or plain float32, and ``channels_last`` lays conv
weights and inputs out as NHWC, the layout GPU tensor cores run convolutions in.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from nni_safs.pruning import MaskHolder, Masks
from nni_safs.settings.config import OPTIMIZERS, PRECISIONS, SCHEDULERS

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader or nni_safs.data.tensors.TensorLoader


@dataclass
class EpochRecord:
    """One fine-tuning epoch: its losses, validation top-1, learning rate and time."""
    epoch: int  # 1-based
    train_loss: float
    val_acc: float  # top-1 in percent
    val_loss: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """A fine-tuning's outcome: its epochs, the best epoch kept, and why it stopped early if it did."""
    best_val_acc: float = 0.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[EpochRecord] = field(default_factory=list)
    diverged: bool = False
    failure: str = ""

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for the ``precision`` setting ``name``.

    ``auto`` is bf16 on a CUDA device that supports it (tensor cores, half the activation
    memory traffic) and fp32 elsewhere: CPU bf16 autocast is faster only on CPUs with
    AMX/AVX512-BF16, and it would change the CPU results users compare against.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def wants_channels_last(model: nn.Module, device: torch.device | str) -> bool:
    """Conv nets on CUDA run NHWC (channels_last): cuDNN's tensor-core kernels use that layout."""
    return torch.device(device).type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=_is_bf16(precision))


def _is_bf16(precision: str) -> bool:
    """``auto`` must be resolved before training (:func:`resolve_precision`)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be resolved to 'fp32' or 'bf16' here, got {precision!r}")
    return precision == "bf16"


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _choice(hparams: Mapping, key: str, valid: Iterable[str], default: str | None = None) -> str:
    value = hparams.get(key, default)
    if value not in valid:
        raise ValueError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    return value


def build_optimizer(params: Iterable[nn.Parameter], hparams: Mapping) -> torch.optim.Optimizer:
    """The optimizer a hyperparameter dict names, over ``params``."""
    from nni_safs.training.optimizers import Fromage, TAdam

    name = _choice(hparams, "optimizer", OPTIMIZERS)
    if "lr" not in hparams or not float(hparams["lr"]) > 0:
        raise ValueError(f"hyperparameter 'lr' must be a positive number, got {hparams.get('lr')!r}")
    lr, wd = float(hparams["lr"]), float(hparams.get("weight_decay", 0.0))
    betas = (0.9, float(hparams.get("beta2", 0.999)))
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(hparams.get("momentum", 0.9)), weight_decay=wd)
    if name == "fromage":
        return Fromage(params, lr=lr, weight_decay=wd)
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "tadam": TAdam}[name]
    return adam(params, lr=lr, betas=betas, weight_decay=wd)


WARMUP_EPOCHS = 5  # constant_warmup and linear_warmup, as the reference
RESTART_ETA_MIN = 5e-5  # cosine_warm_restarts' floor, as the reference


def build_scheduler(optimizer: torch.optim.Optimizer, hparams: Mapping, epochs: int):
    """An epoch-stepped scheduler (``None`` for constant); ``plateau`` is stepped with the training loss."""
    name = _choice(hparams, "scheduler", SCHEDULERS, "constant")
    S = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name == "constant_warmup":
        return S.ConstantLR(optimizer, factor=0.1, total_iters=WARMUP_EPOCHS)
    if name == "step_halving":
        return S.StepLR(optimizer, int(hparams.get("step_size", 20)), gamma=0.5)
    if name == "step":
        return S.StepLR(optimizer, int(hparams.get("step_size", max(1, epochs // 4))), gamma=0.1)
    if name == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "cosine_warm_restarts":
        return S.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, epochs // 4), eta_min=RESTART_ETA_MIN)
    if name == "linear_warmup":
        return S.LinearLR(optimizer, start_factor=0.1, total_iters=WARMUP_EPOCHS)
    return S.ReduceLROnPlateau(optimizer, mode="min", factor=0.05, patience=2)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, device: torch.device | str = "cpu", precision: str = "fp32",
             channels_last: bool = False) -> tuple[float, float]:
    """(top-1 accuracy in percent, mean cross-entropy) of ``model`` on ``loader``.

    ``precision`` (fp32 | bf16) and ``channels_last`` (inputs as NHWC) as in :func:`fine_tune`.
    """
    model.eval()
    device = torch.device(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), device=device)
    count = 0
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, channels_last)
        with _autocast(device, precision):
            logits = model(images)
            loss += nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += labels.numel()
    if count == 0:
        raise ValueError("cannot evaluate on an empty loader")
    return 100.0 * correct.item() / count, loss.item() / count


def fine_tune(model: nn.Module, train_loader: Batches, val_loader: Batches, hparams: Mapping,
              epochs: int, device: torch.device | str = "cpu", masks: Masks | None = None,
              on_epoch: Callable[[EpochRecord], None] | None = None,
              restore_best: bool = True, precision: str = "fp32", channels_last: bool = False) -> TrainResult:
    """Train ``model`` for ``epochs``, validating each epoch, pruned weights held at zero.

    With ``masks`` the pruned weights are re-zeroed after every optimizer step and checked
    after every epoch (a revived weight raises ``MaskViolationError``). ``restore_best``
    loads the best epoch's weights into ``model`` before returning. ``precision`` is
    ``fp32`` or ``bf16`` (autocast; see :func:`resolve_precision`); with ``channels_last``
    the model trains NHWC and is handed back in the default layout.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    _is_bf16(precision)  # validates before any work
    device = torch.device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), hparams)
    scheduler = build_scheduler(optimizer, hparams, epochs)
    holder = MaskHolder(model, masks).attach(optimizer) if masks else None
    result = TrainResult()
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            train_loss = _train_epoch(model, train_loader, optimizer, device, precision, channels_last)
            if not math.isfinite(train_loss):
                result.diverged, result.failure = True, f"training loss became {train_loss} in epoch {epoch}"
                break
            if holder:
                holder.check()
            val_acc, val_loss = evaluate(model, val_loader, device, precision, channels_last)
            lr = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(train_loss)
            elif scheduler is not None:
                scheduler.step()
            record = EpochRecord(epoch, train_loss, val_acc, val_loss, lr, time.perf_counter() - start)
            result.history.append(record)
            if result.best_state is None or val_acc > result.best_val_acc:
                result.best_val_acc, result.best_epoch = val_acc, epoch
                result.best_state = {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                                     for k, v in model.state_dict().items()}
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if holder:
            holder.detach()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    if restore_best and result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result


def warm_up() -> None:
    """Pay, once per process, what the first training of a process pays, without touching CUDA.

    Building the first optimizer imports ``torch._dynamo`` (torch wraps
    ``Optimizer.add_param_group`` in ``torch._disable_dynamo``) and with it sympy, some 900
    modules; :mod:`nni_safs.integration.forkserver` runs this before it forks, so no warm trial pays it.
    Only SGD takes steps: Adam's and AdamW's ``step`` run a graph-capture health check that asks
    ``torch.cuda.is_available()``, which initialises the CUDA driver and leaves every process
    forked afterwards unable to use CUDA. Building them is enough to import what their steps
    need. A tiny conv net on one thread (no OpenMP threads are started, which a forked child
    could not use), constant data and the random state put back as it was: nothing of it
    reaches a later result.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 2))
            batches = [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))]
            fine_tune(model, batches, batches, {"optimizer": "sgd", "lr": 0.1}, epochs=1)
            for name in OPTIMIZERS:
                build_optimizer(model.parameters(), {"optimizer": name, "lr": 0.1})
    finally:
        torch.set_num_threads(threads)


def _train_epoch(model: nn.Module, loader: Batches, optimizer: torch.optim.Optimizer,
                 device: torch.device, precision: str, channels_last: bool) -> float:
    """Mean training loss; accumulated on the device so the loop never syncs per step."""
    model.train()
    total = torch.zeros((), device=device)
    batches = 0
    for images, labels in loader:
        images, labels = _to_device(images, labels, device, channels_last)
        with _autocast(device, precision):
            loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        batches += 1
    return total.item() / max(1, batches)
