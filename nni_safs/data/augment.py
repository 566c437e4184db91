"""The train augmentations of CIFAR-10 and ImageNet16, each defined once for both input paths.

Each is a torchvision transform for the DataLoader path and one batched operation on the
training device for the tensor path (:mod:`nni_safs.data.tensors`), where a per-image CPU
pipeline would leave a GPU idle most of an epoch:

* :class:`PadCropFlip`: torchvision's ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip()``
  (CIFAR-10's);
* :class:`ResizedCrop`: torchvision's ``RandomResizedCrop(size)`` (the reference SAFS's ImageNet16).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Augmentation(Protocol):
    """What a dataset's train augmentation offers both input paths."""

    def torchvision(self) -> list[Any]:
        """The PIL transforms, to run before ``ToTensor`` / ``Normalize``."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a normalized batch ``(N, C, H, W)`` on its own device."""


@dataclass(frozen=True)
class PadCropFlip:
    """Pad by ``padding`` black pixels, crop a random ``size`` x ``size`` window, flip half the images.

    ``mean``/``std`` are the normalization applied after it: the tensor path augments
    normalized images, so a padded pixel there takes the normalized value of black,
    ``-mean / std``, exactly what torchvision's zero padding becomes after ``Normalize``.
    """

    size: int
    padding: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def torchvision(self) -> list[Any]:
        """The PIL transforms, to run before ``ToTensor`` / ``Normalize``."""
        from torchvision import transforms
        return [transforms.RandomCrop(self.size, padding=self.padding), transforms.RandomHorizontalFlip()]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a normalized batch ``(N, C, H, W)`` on its own device; a new tensor of side ``size``.

        Offsets are uniform in ``[0, H + 2 * padding - size]`` and each image is flipped with
        probability 1/2, as torchvision draws them; the crop and the flip are one indexing.
        """
        n, channels, height, width = images.shape
        if len(self.mean) != channels or min(height, width) + 2 * self.padding < self.size:
            raise ValueError(f"PadCropFlip(size={self.size}, padding={self.padding}, {len(self.mean)} channels) "
                             f"cannot augment images of shape {tuple(images.shape[1:])}")
        device, pad = images.device, self.padding
        fill = _normalized_black(self.mean, self.std, images.dtype, device)
        padded = fill.view(1, channels, 1, 1).expand(n, channels, height + 2 * pad, width + 2 * pad).clone()
        padded[:, :, pad:pad + height, pad:pad + width] = images
        top = torch.randint(0, height + 2 * pad - self.size + 1, (n, 1), generator=generator, device=device)
        left = torch.randint(0, width + 2 * pad - self.size + 1, (n, 1), generator=generator, device=device)
        flip = torch.rand((n, 1), generator=generator, device=device) < 0.5
        steps = torch.arange(self.size, device=device)
        rows = top + steps
        cols = left + torch.where(flip, self.size - 1 - steps, steps)
        batch = torch.arange(n, device=device).view(n, 1, 1, 1)
        channel = torch.arange(channels, device=device).view(1, channels, 1, 1)
        return padded[batch, channel, rows.view(n, 1, self.size, 1), cols.view(n, 1, 1, self.size)]


@functools.lru_cache(maxsize=16)
def _normalized_black(mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """``-mean / std`` on ``device``, made once: a copy to a GPU per batch would wait for the GPU."""
    return torch.tensor([-m / s for m, s in zip(mean, std)], dtype=dtype, device=device)


@dataclass(frozen=True)
class ResizedCrop:
    """Crop a random window of ``scale`` of the area and aspect ``ratio``, resized to ``size`` x ``size``.

    As torchvision's ``RandomResizedCrop``: ten draws of (area, log-aspect) per image, the first
    window that fits is taken, else the whole image clamped to ``ratio``; the batched version
    resizes bilinearly (``grid_sample``), the PIL one as torchvision does.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def torchvision(self) -> list[Any]:
        from torchvision import transforms
        return [transforms.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio)]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, channels, height, width = images.shape
        device, attempts = images.device, 10
        area = height * width * torch.empty(n, attempts, device=device).uniform_(*self.scale, generator=generator)
        log_ratio = torch.empty(n, attempts, device=device).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                                                      generator=generator)
        aspect = log_ratio.exp()
        crop_w = (area * aspect).sqrt().round()
        crop_h = (area / aspect).sqrt().round()
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = fits.float().argmax(1, keepdim=True)  # the first window that fits
        crop_w, crop_h = crop_w.gather(1, first).squeeze(1), crop_h.gather(1, first).squeeze(1)
        whole_w, whole_h = _clamped_whole(width, height, self.ratio)
        none_fit = ~fits.any(1)
        crop_w = torch.where(none_fit, torch.full_like(crop_w, whole_w), crop_w)
        crop_h = torch.where(none_fit, torch.full_like(crop_h, whole_h), crop_h)
        top = (torch.rand(n, device=device, generator=generator) * (height - crop_h + 1)).floor()
        left = (torch.rand(n, device=device, generator=generator) * (width - crop_w + 1)).floor()
        top = torch.where(none_fit, ((height - crop_h) / 2).round(), top)
        left = torch.where(none_fit, ((width - crop_w) / 2).round(), left)
        theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=device)  # output [-1, 1] -> the window
        theta[:, 0, 0] = crop_w / width
        theta[:, 0, 2] = (2 * left + crop_w) / width - 1
        theta[:, 1, 1] = crop_h / height
        theta[:, 1, 2] = (2 * top + crop_h) / height - 1
        grid = torch.nn.functional.affine_grid(theta, [n, channels, self.size, self.size], align_corners=False)
        return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                                               align_corners=False)


def _clamped_whole(width: int, height: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """torchvision's fallback window: the whole image, narrowed to the nearest allowed aspect."""
    aspect = width / height
    if aspect < ratio[0]:
        return float(width), float(round(width / ratio[0]))
    if aspect > ratio[1]:
        return float(round(height * ratio[1])), float(height)
    return float(width), float(height)
