"""The two stage-2 optimizers of the reference SAFS that torch lacks: TAdam and Fromage.

Written from their papers; each is a plain :class:`torch.optim.Optimizer` that steps on the CPU
or the GPU alike and never asks CUDA anything (so a process that forks trials may build them).

* :class:`TAdam` (Ilboudo, Kobayashi and Sugimoto, "Robust Stochastic Gradient Descent with
  Student-t Distribution based First-order Momentum", IEEE TNNLS 2020): Adam whose first moment
  is a Student-t weighted mean, so a gradient far from the running mean (an outlier) moves it
  little.
* :class:`Fromage` (Bernstein, Vahdat, Yue and Liu, "On the distance between two neural networks
  and the stability of learning", NeurIPS 2020): each tensor moves by ``lr`` times its own norm
  in the gradient's direction, then shrinks by ``1/sqrt(1 + lr^2)``, so a step changes every
  layer by the same relative amount.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


class _L2Optimizer(torch.optim.Optimizer):
    """A per-tensor update rule whose weight decay is added to the gradient (L2), as both papers'."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    decay = group["weight_decay"]
                    self._update(group, p, p.grad.add(p, alpha=decay) if decay else p.grad)
        return loss

    def _update(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        raise NotImplementedError


class TAdam(_L2Optimizer):
    """Student-t Adam. Per tensor of ``d`` elements, with ``nu`` degrees of freedom (default ``d``):

    ``w_t = (nu + d) / (nu + sum((g_t - m_{t-1})^2 / (v_{t-1} + eps)))``,
    ``m_t = (W_{t-1} m_{t-1} + w_t g_t) / (W_{t-1} + w_t)``, ``W_t = (2 beta1 - 1) / beta1 W_{t-1} + w_t``
    with ``W_0 = beta1 / (1 - beta1)``; ``v_t`` and the bias-corrected step as Adam's.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, dof: float | None = None) -> None:
        if not lr > 0 or not 0 < betas[0] < 1 or not 0 <= betas[1] < 1 or weight_decay < 0:
            raise ValueError(f"TAdam needs lr > 0, 0 < beta1 < 1, 0 <= beta2 < 1 and weight_decay >= 0; got "
                             f"lr={lr}, betas={betas}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "dof": dof})

    def _update(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            state["weight_sum"] = beta1 / (1 - beta1)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        d = p.numel()
        dof = float(group["dof"] if group["dof"] is not None else d)
        distance = ((grad - m).square() / (v + group["eps"])).sum()
        w = (dof + d) / (dof + distance)
        total = state["weight_sum"] + w
        m.mul_(state["weight_sum"] / total).add_(grad * (w / total))
        state["weight_sum"] = (2 * beta1 - 1) / beta1 * state["weight_sum"] + w
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        state["step"] += 1
        correction1 = 1 - beta1 ** state["step"]
        correction2 = 1 - beta2 ** state["step"]
        denom = (v.sqrt() / math.sqrt(correction2)).add_(group["eps"])
        p.addcdiv_(m, denom, value=-group["lr"] / correction1)


class Fromage(_L2Optimizer):
    """``p <- (p - lr * |p| / |g| * g) / sqrt(1 + lr^2)`` per tensor (``|.|``: Frobenius norm);
    a tensor or gradient of norm 0 takes a plain gradient step."""

    def __init__(self, params: Iterable, lr: float = 1e-2, weight_decay: float = 0.0) -> None:
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"Fromage needs lr > 0 and weight_decay >= 0; got lr={lr}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def _update(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        lr = group["lr"]
        p_norm, g_norm = p.norm(), grad.norm()
        scale = torch.where((p_norm > 0) & (g_norm > 0), p_norm / g_norm.clamp_min(1e-30), torch.ones_like(p_norm))
        p.sub_(grad * (lr * scale)).div_(math.sqrt(1 + lr * lr))
