"""SCALE-UP (Guo et al., ICLR 2023): a triggered input keeps its prediction when its
pixels are scaled up; a clean one does not.

Every input x is multiplied by each of the scales h (clipped to the valid range [0, 1])
and its *scaled prediction consistency* is the share of the scaled copies the model
still puts in the class it gives x itself. The authors' code scales by 1 to 11 and
reports the AUROC only; BackdoorBox's re-implementation, from the same group, scales by
3, 5, 7, 9 and 11 and flags an input whose consistency reaches a threshold T = 0.5
(``threshold_rule="fixed"``). A defender may also set the threshold on its own clean
held-out inputs, as for STRIP, so that at most a share ``frr`` of them would be flagged
(``threshold_rule="frr"``). An input filter: it needs no training data.

Multiplying MNIST's dark background by any h leaves it black and saturates the strokes
to white: a clean digit scaled up is often still the same digit, so clean inputs can be
as consistent as triggered ones - the weakness the IBD-PSC authors point out for scaling
on saturated images, which the chapter measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.checks import choice, list_of, open_unit, positive
from ..core.column import Column
from ..core.training import predict
from .base import Detector, register


@dataclass
class ScaleUpResult:
    """Flags (bool [N]) and every input's scaled prediction consistency, with the
    threshold used."""

    flags: torch.Tensor
    consistency: torch.Tensor
    threshold: float


@register
@dataclass(frozen=True)
class ScaleUp(Detector):
    """Flag inputs whose prediction survives scaling by each of ``scales`` at least a
    share ``spc_threshold`` of the time (``threshold_rule="fixed"``), or as often as at
    most ``frr`` of the defender's clean inputs do (``"frr"``)."""

    name = "scale_up"
    column = Column("FAR", False, 0.05, "SCALE-UP", "screening")
    rules = {
        "scales": list_of(positive(1000.0)),
        "threshold_rule": choice(("fixed", "frr")),
        "spc_threshold": open_unit,
        "frr": open_unit,
    }
    scales: tuple = (3, 5, 7, 9, 11)
    threshold_rule: str = "fixed"
    spc_threshold: float = 0.5
    frr: float = 0.01
    #: an input is suspicious when its statistic is at or *above* the threshold
    suspicious_below = False

    def statistic(
        self, model, x: torch.Tensor, x_pool=None, seed: int = 0
    ) -> torch.Tensor:
        """Each input's scaled prediction consistency, in [0, 1] [N]."""
        if not len(x):
            return torch.zeros(0)
        own = predict(model, x)
        same = [predict(model, (x * h).clamp(0.0, 1.0)) == own for h in self.scales]
        return torch.stack(same).float().mean(0)

    def threshold(self, model, x_clean: torch.Tensor, x_pool=None, seed=0) -> float:
        """T (fixed), or the lowest consistency level at or above which at most a share
        ``frr`` of the clean inputs ``x_clean`` lie (infinite when even the top level
        holds more: then nothing is flagged)."""
        if self.threshold_rule == "fixed":
            return self.spc_threshold
        spc = self.statistic(model, x_clean)
        for level in sorted(set(spc.tolist())):
            if float((spc >= level).float().mean()) <= self.frr:
                return float(level)
        return math.inf

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        seed: int = 0,
        device: str = "auto",
        train=None,
        *,
        threshold: float,
        x_pool=None,
    ) -> ScaleUpResult:
        """Flag the inputs ``x`` whose consistency reaches ``threshold``."""
        spc = self.statistic(model, x)
        return ScaleUpResult(spc >= threshold, spc, threshold)
