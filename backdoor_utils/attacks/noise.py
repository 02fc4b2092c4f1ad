"""An invisible additive noise trigger: one fixed, seeded pattern bounded in L-inf by
``eps``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..core.checks import positive
from .base import Attack, register


@dataclass(frozen=True)
class NoiseTrigger:
    """A fixed, seeded pattern, uniform in [-eps, eps] per pixel, added to the whole
    image and clamped to [0,1] (so L-inf <= eps)."""

    eps: float = 8 / 255
    seed: int = 1234

    def pattern(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return (torch.rand(1, 1, 28, 28, generator=g) * 2 - 1) * self.eps

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.pattern().to(x.device, x.dtype)).clamp_(0.0, 1.0)

    def spec(self) -> dict:
        return {"kind": "noise", **asdict(self)}


@register
@dataclass(frozen=True)
class Noise(Attack):
    """Dirty-label poisoning with :class:`NoiseTrigger` (``eps`` in [0, 1] pixel
    units)."""

    name = "noise"
    rules = {"eps": positive(1.0)}
    eps: float = 8 / 255

    def trigger(self, seed: int = 0) -> NoiseTrigger:
        return NoiseTrigger(eps=self.eps)
