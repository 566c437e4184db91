"""The train augmentation of CIFAR-10 and ImageNet16, defined once for both input paths.

:class:`PadCropFlip` is torchvision's ``RandomCrop(size, padding)`` then
``RandomHorizontalFlip()``: as PIL transforms for the DataLoader path, and as one gather over a
whole batch on the training device for the tensor path (:mod:`nni_safs.data.tensors`), where a
per-image CPU pipeline would leave a GPU idle most of an epoch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch


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
