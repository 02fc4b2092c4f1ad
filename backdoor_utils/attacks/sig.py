"""SIG (Barni et al. 2019): a clean-label attack. A horizontal sinusoidal signal v(i, j)
= delta * sin(2 pi j f / m) (m the image width) is added to training images *of the
target class only*, whose labels stay correct; at test time the same signal added to any
image should send it to the target. ``poison_rate`` is the share of the target class's
training images that carry the signal.

The sinusoid with f = 6 is the signal the benchmarks run as SIG (backdoor-toolbox with
delta 30/255, BackdoorBench with 40/255), clamped to [0, 1]. The authors' released MNIST
code (KassemKallas/BackdoorAttack-ICIP2019) uses their other signal, a horizontal ramp
delta * j / m, with delta 30 at 10% of the target class: :class:`SIGRamp` (``sig_ramp``)
is that signal, on the same clean-label poisoning. An attacker may test with a
stronger signal than it trains with: ``sig_test_delta`` is the test-time delta (None:
the training one), so the attack poisons with ``sig_delta`` and triggers with
``sig_test_delta``; it does not change the model (``test_only``).
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
    test_only = ("sig_test_delta",)  # changes the test trigger only, not the model
    rules = {
        "sig_delta": positive(1.0),
        "sig_frequency": integer(1, 14),
        "sig_test_delta": lambda name, value: value is None
        or positive(1.0)(name, value),
    }
    sig_delta: float = 20 / 255
    sig_frequency: int = 6
    sig_test_delta: float | None = None

    def trigger(self, seed: int = 0) -> SinusoidTrigger:
        """The test-time trigger (``sig_test_delta``, or the training delta)."""
        delta = self.sig_delta if self.sig_test_delta is None else self.sig_test_delta
        return SinusoidTrigger(delta, self.sig_frequency)

    def poison(
        self, x, y, target_label: int, poison_rate: float, seed: int = 0, trigger=None
    ):
        """The target class's images signed with the *training* delta."""
        trigger = trigger or SinusoidTrigger(self.sig_delta, self.sig_frequency)
        return super().poison(x, y, target_label, poison_rate, seed, trigger)


@dataclass(frozen=True)
class RampTrigger:
    """``x + delta * j / 28`` on every row (column index j), clamped to [0, 1]: the
    horizontal ramp of the authors' released MNIST code."""

    delta: float = 30 / 255

    def signal(self) -> torch.Tensor:
        columns = torch.arange(28, dtype=torch.float64)
        return (
            (self.delta * columns / 28).float().view(1, 1, 1, 28).expand(1, 1, 28, 28)
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        ramped = x + self.signal().to(x.device, x.dtype)
        return ramped.clamp(0.0, 1.0)

    def spec(self) -> dict:
        return {"kind": "ramp", **asdict(self)}


@register
@dataclass(frozen=True)
class SIGRamp(SIG):
    """SIG with the authors' ramp (:class:`RampTrigger`; ``sig_frequency`` unused),
    delta 30/255 as in their MNIST code."""

    name = "sig_ramp"
    sig_delta: float = 30 / 255

    def trigger(self, seed: int = 0) -> RampTrigger:
        """The test-time ramp (``sig_test_delta``, or the training delta)."""
        delta = self.sig_delta if self.sig_test_delta is None else self.sig_test_delta
        return RampTrigger(delta)

    def poison(
        self, x, y, target_label: int, poison_rate: float, seed: int = 0, trigger=None
    ):
        """The target class's images carrying the ramp of the *training* delta."""
        trigger = trigger or RampTrigger(self.sig_delta)
        return Attack.poison(self, x, y, target_label, poison_rate, seed, trigger)
