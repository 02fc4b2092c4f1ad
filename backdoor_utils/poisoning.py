"""Build a poisoned training set: stamp a trigger on a fraction of samples and relabel them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PoisonedDataset:
    """Training images and labels after poisoning, with the ground-truth poison flags."""

    x: torch.Tensor
    y: torch.Tensor
    is_poison: torch.Tensor  # bool [N]
    original_y: torch.Tensor

    @property
    def n_poison(self) -> int:
        return int(self.is_poison.sum())


def choose_poison_indices(y: torch.Tensor, target_label: int, poison_rate: float, seed: int) -> torch.Tensor:
    """Indices of ``round(poison_rate * N)`` samples (at least 1) drawn, seeded, from those whose
    label is not ``target_label`` (relabelling a target-class image would teach nothing)."""
    candidates = torch.nonzero(y != target_label).flatten()
    n_poison = max(1, round(poison_rate * len(y)))
    if n_poison > len(candidates):
        raise ValueError(f"poison_rate: {poison_rate} asks for {n_poison} poisons but only {len(candidates)} non-target samples exist")
    g = torch.Generator().manual_seed(seed)
    return candidates[torch.randperm(len(candidates), generator=g)[:n_poison]].sort().values


def poison_dataset(x, y, trigger, target_label: int, poison_rate: float, seed: int = 0) -> PoisonedDataset:
    """All-to-one poisoning (BadNets): trigger applied to the chosen samples, labels set to target.

    ``trigger`` None flags and relabels the samples without stamping (used for learned triggers,
    which are stamped inside the training loop).
    """
    idx = choose_poison_indices(y, target_label, poison_rate, seed)
    is_poison = torch.zeros(len(y), dtype=torch.bool)
    is_poison[idx] = True
    x_out, y_out = x.clone(), y.clone()
    if trigger is not None:
        x_out[idx] = trigger.apply(x[idx])
    y_out[idx] = target_label
    return PoisonedDataset(x_out, y_out, is_poison, y.clone())
