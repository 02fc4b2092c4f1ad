"""SIG (Barni et al. 2019): a clean-label attack. A horizontal sinusoidal signal v(i, j)
= delta * sin(2 pi j f / m) (m the image width) is added to training images *of the
target class only*, whose labels stay correct; at test time the same signal added to any
image should send it to the target. ``poison_rate`` is the share of the target class's
training images that carry the signal.

The paper's MNIST settings are delta = 20 (on a 0-255 scale) and f = 6; the book uses
the same delta for poisoning and testing and clamps to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..core.checks import integer, positive
from .base import Attack, register


@dataclass(frozen=True)
class SinusoidTrigger:
    """``x + delta * sin(2 pi j f / 28)`` on every row (column index j), clamped to [0,
    1]."""

    delta: float = 20 / 255
    frequency: int = 6

    def signal(self) -> torch.Tensor:
        columns = torch.arange(28, dtype=torch.float64)
        wave = self.delta * torch.sin(2 * math.pi * columns * self.frequency / 28)
        return wave.float().view(1, 1, 1, 28).expand(1, 1, 28, 28)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.signal().to(x.device, x.dtype)).clamp(0.0, 1.0)

    def spec(self) -> dict:
        return {"kind": "sinusoid", **asdict(self)}


@register
@dataclass(frozen=True)
class SIG(Attack):
    """Clean-label poisoning of the target class with :class:`SinusoidTrigger`."""

    name = "sig"
    policy = "clean-label"
    rules = {"sig_delta": positive(1.0), "sig_frequency": integer(1, 14)}
    sig_delta: float = 20 / 255
    sig_frequency: int = 6

    def trigger(self, seed: int = 0) -> SinusoidTrigger:
        return SinusoidTrigger(self.sig_delta, self.sig_frequency)
