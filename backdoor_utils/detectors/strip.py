"""STRIP (Gao et al. 2019): a triggered input stays what the trigger says whatever it is
mixed with.

An input is superimposed with N clean held-out images (pixel sum, saturated at 1 as the
authors' ``addWeighted(x, 1, overlay, 1, 0)`` saturates 8-bit pixels); the model's
predictions on the N blends are turned into Shannon entropies (bits, over the ten
classes) and averaged. A clean input's blends are ambiguous (high entropy); a triggered
input's blends keep predicting the target (low entropy). The threshold is the entropy
below which only ``frr`` of *clean held-out* inputs fall, so the false-rejection rate on
clean inputs is ``frr`` by construction; an input with a lower entropy is flagged. STRIP
screens inputs at inference time: it needs no training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import integer, open_unit
from ..core.training import predict_proba
from .base import Detector, register


@dataclass
class StripResult:
    """Flags (bool [N]) and every input's mean entropy (bits), with the threshold
    used."""

    flags: torch.Tensor
    entropy: torch.Tensor
    threshold: float


@register
@dataclass(frozen=True)
class STRIP(Detector):
    """``n_overlays`` blends per input; threshold at the ``frr`` quantile of clean
    entropies."""

    name = "strip"
    rules = {"n_overlays": integer(1, 1000), "frr": open_unit}
    n_overlays: int = 100
    frr: float = 0.01

    def overlays(
        self, x_pool: torch.Tensor, n_inputs: int, seed: int = 0
    ) -> torch.Tensor:
        """Indices [n_inputs, n_overlays] into ``x_pool``: each input its own seeded
        draw."""
        if len(x_pool) < self.n_overlays:
            raise ValueError(
                f"n_overlays: at most {len(x_pool)} clean overlay images are available,"
                f" got {self.n_overlays}"
            )
        g = torch.Generator().manual_seed(seed)
        return torch.stack(
            [
                torch.randperm(len(x_pool), generator=g)[: self.n_overlays]
                for _ in range(n_inputs)
            ]
        )

    def entropy(
        self,
        model,
        x: torch.Tensor,
        x_pool: torch.Tensor,
        seed: int = 0,
        chunk: int = 64,
    ) -> torch.Tensor:
        """Mean Shannon entropy (bits) of the model's predictions on each input's blends
        [N]."""
        picks = self.overlays(x_pool, len(x), seed)
        out = []
        for s in range(0, len(x), chunk):
            xs, ps = x[s : s + chunk], picks[s : s + chunk]
            blends = (xs[:, None] + x_pool[ps]).clamp(0.0, 1.0).flatten(0, 1)
            p = predict_proba(model, blends).double().clamp_min(1e-12)
            h = -(p * p.log2()).sum(1).view(len(xs), self.n_overlays)
            out.append(h.mean(1).float())
        return torch.cat(out) if out else torch.zeros(0)

    def threshold(
        self, model, x_clean: torch.Tensor, x_pool: torch.Tensor, seed: int = 0
    ) -> float:
        """The entropy below which a share ``frr`` of the clean held-out inputs
        ``x_clean`` fall."""
        return float(
            torch.quantile(
                self.entropy(model, x_clean, x_pool, seed).double(), self.frr
            )
        )

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        seed: int = 0,
        device: str = "auto",
        train=None,
        *,
        x_pool: torch.Tensor,
        threshold: float,
    ) -> StripResult:
        """Flag the inputs ``x`` whose mean entropy is below ``threshold`` (labels are
        not used)."""
        h = self.entropy(model, x, x_pool, seed)
        return StripResult(h < threshold, h, threshold)
