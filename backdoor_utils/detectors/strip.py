"""STRIP (Gao et al. 2019): a triggered input stays what the trigger says whatever it is
mixed with.

An input is superimposed with N clean held-out images; the model's predictions on the N
blends are turned into Shannon entropies (bits, over the ten classes) and averaged. A
clean input's blends are ambiguous (high entropy); a triggered input's blends keep
predicting the target (low entropy). The defender sets the threshold on *clean held-out*
inputs so that a share ``frr`` of them would be rejected; an input with a lower entropy
is flagged. STRIP screens inputs at inference time: it needs no training data.

The reference setting is the authors' code and paper (garrisongys/STRIP): the blend is
``cv2.addWeighted(x, 1, overlay, 1, 0)`` on float images, a plain pixel sum that does
not saturate (values up to 2; ``blend="sum"``), and the threshold is the ``frr``
quantile of a normal distribution fitted to the clean entropies (``threshold="normal"``,
the paper's choice). The book's first version saturated the sum at 1 (as the same call
does on 8-bit images, and as WaNet's re-implementation does; ``blend="saturated"``) and
took the empirical quantile (``threshold="quantile"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scipy.stats import norm

from ..core.checks import choice, integer, open_unit
from ..core.training import predict_proba
from ..core.column import Column
from .base import Detector, register

#: How an input and an overlay are superimposed: the plain float sum (the reference) or
#: the sum saturated at 1.
BLENDS = ("sum", "saturated")

#: Where the threshold comes from: the ``frr`` quantile of a normal fitted to the clean
#: entropies (the paper), or their empirical ``frr`` quantile.
THRESHOLD_RULES = ("normal", "quantile")


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
    """``n_overlays`` blends per input (``blend``: "sum" or "saturated"); the threshold
    at the ``frr`` quantile of the clean entropies (``threshold``: of a normal fit, or
    "quantile", the empirical one)."""

    name = "strip"
    column = Column("FAR", False, 0.05, "STRIP", "screening")
    rules = {
        "n_overlays": integer(1, 1000),
        "frr": open_unit,
        "blend": choice(BLENDS),
        "threshold_rule": choice(THRESHOLD_RULES),
    }
    n_overlays: int = 100
    frr: float = 0.01
    blend: str = "sum"
    threshold_rule: str = "normal"
    #: an input is suspicious when its statistic (the entropy) is *below* the threshold
    suspicious_below = True

    def superimpose(self, x: torch.Tensor, overlays: torch.Tensor) -> torch.Tensor:
        """Every input ``x`` [n, 1, 28, 28] plus each of its overlays [n, m, 1, 28, 28],
        flattened to [n * m, 1, 28, 28]: the plain sum, or saturated at 1."""
        blends = x[:, None] + overlays
        if self.blend == "saturated":
            blends = blends.clamp(0.0, 1.0)
        return blends.flatten(0, 1)

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
            p = (
                predict_proba(model, self.superimpose(xs, x_pool[ps]))
                .double()
                .clamp_min(1e-12)
            )
            h = -(p * p.log2()).sum(1).view(len(xs), self.n_overlays)
            out.append(h.mean(1).float())
        return torch.cat(out) if out else torch.zeros(0)

    def statistic(
        self, model, x: torch.Tensor, x_pool: torch.Tensor, seed: int = 0
    ) -> torch.Tensor:
        """The input filter's statistic: :meth:`entropy`."""
        return self.entropy(model, x, x_pool, seed)

    def threshold(
        self, model, x_clean: torch.Tensor, x_pool: torch.Tensor, seed: int = 0
    ) -> float:
        """The entropy below which a share ``frr`` of the clean held-out inputs
        ``x_clean`` fall (:meth:`cut`)."""
        return self.cut(self.entropy(model, x_clean, x_pool, seed))

    def cut(self, clean_entropy: torch.Tensor) -> float:
        """The ``frr`` quantile of the clean entropies: of the normal distribution
        fitted to them (maximum likelihood), or the empirical one."""
        h = clean_entropy.double().numpy()
        if self.threshold_rule == "normal":
            return float(norm.ppf(self.frr, *norm.fit(h)))
        return float(torch.quantile(clean_entropy.double(), self.frr))

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
