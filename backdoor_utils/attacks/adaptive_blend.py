"""Adaptive-Blend (Qi et al. 2023): a blended backdoor built to defeat latent-separation
defenses.

Two changes to blended injection (:mod:`.blended`) keep the poisons' representations
inside the target class's instead of in a cluster of their own:

* the key is cut into a 4 x 4 grid of pieces and each poisoned training image carries
  only a random share of them (``pieces_kept``), blended with a weaker weight
  (``adaptive_alpha``) than the full key used at test time (``adaptive_test_alpha``);
* *regularisation* ("cover") images carry partial keys the same way but keep their
  correct labels, ``cover_ratio`` times as many as there are poisons, so that the key
  alone does not decide the class and the model has to learn the full, strong key as the
  trigger.

The paper's settings (CIFAR-10): alpha 0.15 at training, 0.2 at test, 16 pieces with
half kept, as many cover images as poisons. Only the relabelled images are flagged as
poison: cover images are correctly labelled and carry no backdoor on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import open_unit, positive
from .base import Attack, PoisonedDataset, draw_samples, choose_poison_indices, register
from .blended import BlendedTrigger

GRID = 4  # pieces per side: 16 pieces of 7 x 7 pixels


def piece_masks(n: int, share: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` masks [n, 1, 28, 28]: each keeps a random ``share`` of the 4 x 4 pieces (at
    least one)."""
    keep = max(1, round(share * GRID * GRID))
    scores = torch.rand(n, GRID * GRID, generator=generator)
    chosen = torch.zeros(n, GRID * GRID)
    chosen.scatter_(1, scores.argsort(1)[:, :keep], 1.0)
    cell = 28 // GRID
    return (
        chosen.view(n, 1, GRID, GRID)
        .repeat_interleave(cell, 2)
        .repeat_interleave(cell, 3)
    )


@register
@dataclass(frozen=True)
class AdaptiveBlend(Attack):
    """Partial, weaker keys on poisons and on correctly labelled cover images; the full
    key at test."""

    name = "adaptive_blend"
    rules = {
        "adaptive_alpha": open_unit,
        "adaptive_test_alpha": open_unit,
        "pieces_kept": open_unit,
        "cover_ratio": positive(10.0),
    }
    adaptive_alpha: float = 0.15
    adaptive_test_alpha: float = 0.2
    pieces_kept: float = 0.5
    cover_ratio: float = 1.0

    def trigger(self, seed: int = 0) -> BlendedTrigger:
        return BlendedTrigger(alpha=self.adaptive_test_alpha)

    def poison(
        self, x, y, target_label: int, poison_rate: float, seed: int = 0, trigger=None
    ) -> PoisonedDataset:
        poisons = choose_poison_indices(y, target_label, poison_rate, seed)
        others = torch.ones(len(y), dtype=torch.bool)
        others[poisons] = False
        covers = draw_samples(
            torch.nonzero(others).flatten(),
            round(self.cover_ratio * len(poisons)),
            seed + 1,
            "images left for cover",
        )
        key = BlendedTrigger(alpha=self.adaptive_alpha).key()
        g = torch.Generator().manual_seed(seed + 2)
        x_out, y_out = x.clone(), y.clone()
        for idx in (poisons, covers):
            mask = piece_masks(len(idx), self.pieces_kept, g)
            x_out[idx] = x[idx] + self.adaptive_alpha * mask * (key - x[idx])
        y_out[poisons] = target_label
        is_poison = torch.zeros(len(y), dtype=torch.bool)
        is_poison[poisons] = True
        return PoisonedDataset(x_out, y_out, is_poison, y.clone())
