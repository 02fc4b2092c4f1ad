"""Blended injection (Chen et al. 2017): a fixed full-image key pattern blended into the
poisons, x' = alpha * k + (1 - alpha) * x, relabelled to the target (dirty-label,
all-to-one).

The paper blends a cartoon image or a random-noise pattern; MNIST has one channel, so
the book uses their random-noise key: uniform in [0, 1] per pixel, seeded. The same
alpha is used for poisoning and at test time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..core.checks import open_unit
from .base import Attack, register


@dataclass(frozen=True)
class BlendedTrigger:
    """``alpha * key + (1 - alpha) * x`` with a seeded uniform-noise ``key`` [1, 1, 28,
    28]."""

    alpha: float = 0.2
    seed: int = 4321

    def key(self) -> torch.Tensor:
        return torch.rand(
            1, 1, 28, 28, generator=torch.Generator().manual_seed(self.seed)
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.key().to(x.device, x.dtype) + (1 - self.alpha) * x

    def spec(self) -> dict:
        return {"kind": "blended", **asdict(self)}


@register
@dataclass(frozen=True)
class Blended(Attack):
    """Dirty-label poisoning with :class:`BlendedTrigger` (``blend_alpha`` in (0,
    1))."""

    name = "blended"
    rules = {"blend_alpha": open_unit}
    blend_alpha: float = 0.2

    def trigger(self, seed: int = 0) -> BlendedTrigger:
        return BlendedTrigger(alpha=self.blend_alpha)
