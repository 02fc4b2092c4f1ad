"""Spectral signatures (Tran, Li and Madry 2018): poisons leave a trace along the top
singular direction of their label's representations.

Per training label: the representations R (one row per image) that the model computes
at ``layer``; the top right-singular vector v of those rows centred on their mean; each
image's outlier score along v. The paper removes, in every label, the 1.5 x epsilon x n
images with the highest scores, where epsilon is an upper bound on the share of that
label's images that are poisoned - the defender's assumption about the attack, not
something read off the data. With 1% of the whole training set poisoned into one label,
about 9% of that label is poison, so epsilon must bound *that* share (IBM ART's version
removes 1.5% of every label instead). The model is then retrained without the removed
images; the orchestration does that and scores the flags.

The reference setting is the authors' released code (MadryLab/backdoor_data_poisoning,
``compute_corr.py``; BackdoorBench's ``spectral.py`` does the same): the layer is the
last convolutional block's output, flattened, before the network reduces it for its
linear head (their ResNet's last residual unit before global pooling; here the pooled
conv features the fully connected head reads, 3,136 values), and the score is |R_i . v|
on the representations *as they are* - centred only to find v. The paper's Algorithm 1
writes the squared projection of the *centred* representations instead
(``scoring="centred_squared"``, the book's first version, on the 128-unit penultimate
layer). Deviation from the authors' code: it scores the target label only (the
experiment knew it); here, as in the paper and BackdoorBench, every label is scored, the
defender not knowing the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import svds

from ..core.checks import choice, open_unit
from ..core.training import activations
from ..core.column import Column
from .base import Detector, register

#: The layers the detector can read (:func:`backdoor_utils.core.training.activations`):
#: the pooled conv features the head reads (the reference), the 128-unit penultimate
#: layer, and the last conv layer before its pooling.
LAYERS = ("conv", "penultimate", "last_conv")

#: "reference": |R_i . v| on the uncentred representations (the authors' code);
#: "centred_squared": ((R_i - mean) . v)^2 (the paper's Algorithm 1).
SCORINGS = ("reference", "centred_squared")


def direction_scores(
    reps: torch.Tensor, n_directions: int = 1, scoring: str = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outlier scores [n, k] of the rows of ``reps`` [n, ...] along the first
    ``n_directions`` right-singular vectors of the centred rows, and those vectors'
    singular values [k]: ``|R_i . v|`` (reference) or ``((R_i - mean) . v)^2``."""
    rows = reps.flatten(1).double()
    centred = rows - rows.mean(0, keepdim=True)
    values, vh = top_singular(centred, n_directions)
    k = len(values)
    if scoring == "reference":
        return (rows @ vh[:k].T).abs(), values[:k]
    return (centred @ vh[:k].T).pow(2), values[:k]


def top_singular(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest singular values of ``matrix`` [n, d] (float64) and their right
    singular vectors [k, d], largest first. Where ``k`` is far below the matrix's size a
    truncated decomposition (ARPACK to machine precision, from a fixed start vector)
    finds the same vectors as the full one, up to a sign no score depends on - a 5,400 x
    12,544 label costs seconds instead of minutes; small matrices take the full SVD."""
    n, d = matrix.shape
    k = min(k, n, d)
    if min(n, d) < 64 or k > min(n, d) // 4:
        _, values, vh = torch.linalg.svd(matrix, full_matrices=False)
        return values[:k], vh[:k]
    start = np.ones(min(n, d)) / np.sqrt(min(n, d))
    _, values, vt = svds(matrix.numpy(), k=k, v0=start, tol=0, solver="arpack")
    order = np.argsort(-values, kind="stable")
    return torch.from_numpy(values[order].copy()), torch.from_numpy(vt[order].copy())


def outlier_scores(reps: torch.Tensor, scoring: str = "reference") -> torch.Tensor:
    """Each row's score along the top right-singular direction of the centred rows."""
    return direction_scores(reps, 1, scoring)[0][:, 0].float()


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
    (0, 1)), scored at ``layer`` (one of :data:`LAYERS`) by ``scoring`` (one of
    :data:`SCORINGS`)."""

    name = "spectral_signatures"
    column = Column("recall", True, 0.9, "Spectral\nSignatures", "detection", "recall")
    rules = {"epsilon": open_unit, "layer": choice(LAYERS), "scoring": choice(SCORINGS)}
    epsilon: float = 0.1
    layer: str = "conv"
    scoring: str = "reference"

    def detect(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int = 0,
        device: str = "auto",
        train=None,
    ) -> SpectralResult:
        flags = torch.zeros(len(y), dtype=torch.bool)
        scores = torch.zeros(len(y))
        removed = {}
        for label in torch.unique(y).tolist():
            index = torch.nonzero(y == label).flatten()
            reps = activations(model, x[index], layer=self.layer)
            label_scores = outlier_scores(reps, self.scoring)
            scores[index] = label_scores
            n_remove = min(len(index), int(np.floor(1.5 * self.epsilon * len(index))))
            top = torch.argsort(label_scores, descending=True)[:n_remove]
            flags[index[top]] = True
            removed[int(label)] = n_remove
        return SpectralResult(flags, scores, removed)
