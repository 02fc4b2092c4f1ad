"""Spectral signatures (Tran, Li and Madry 2018): poisons leave a trace along the top
singular direction of their label's representations.

Per training label: the penultimate representations R (one row per image), centred on
their mean; the top right-singular vector v of that centred matrix; each image's outlier
score is its squared projection ((R_i - mean) . v)^2. The paper removes, in every label,
the 1.5 x epsilon x n images with the highest scores, where epsilon is an upper bound on
the share of that label's images that are poisoned - the defender's assumption about the
attack, not something read off the data. With 1% of the whole training set poisoned into
one label, about 9% of that label is poison, so epsilon must bound *that* share (IBM
ART's version removes 1.5% of every label instead). The model is then retrained without
the removed images; the orchestration does that and scores the flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.checks import open_unit
from ..core.training import activations
from .base import Detector, register


def direction_scores(
    reps: torch.Tensor, n_directions: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared projections [n, k] of the centred rows of ``reps`` [n, d] on its first
    ``n_directions`` right-singular vectors, and those vectors' singular values [k]."""
    centred = reps.double() - reps.double().mean(0, keepdim=True)
    _, values, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(n_directions, len(values))
    return (centred @ vh[:k].T).pow(2), values[:k]


def outlier_scores(reps: torch.Tensor) -> torch.Tensor:
    """Squared projection of each centred row of ``reps`` [n, d] on its top
    right-singular vector."""
    return direction_scores(reps)[0][:, 0].float()


@dataclass
class SpectralResult:
    """Flags (bool [N]) and every image's outlier score within its label."""

    flags: torch.Tensor
    scores: torch.Tensor
    removed_per_label: dict


@register
@dataclass(frozen=True)
class SpectralSignatures(Detector):
    """Remove the ``1.5 * epsilon`` highest-scoring share of every label (``epsilon`` in
    (0, 1))."""

    name = "spectral_signatures"
    rules = {"epsilon": open_unit}
    epsilon: float = 0.1

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int = 0,
        device: str = "auto",
        train=None,
    ) -> SpectralResult:
        reps = activations(model, x, layer="penultimate")
        flags = torch.zeros(len(y), dtype=torch.bool)
        scores = torch.zeros(len(y))
        removed = {}
        for label in torch.unique(y).tolist():
            index = torch.nonzero(y == label).flatten()
            label_scores = outlier_scores(reps[index])
            scores[index] = label_scores
            n_remove = min(len(index), int(np.floor(1.5 * self.epsilon * len(index))))
            top = torch.argsort(label_scores, descending=True)[:n_remove]
            flags[index[top]] = True
            removed[int(label)] = n_remove
        return SpectralResult(flags, scores, removed)
