"""Fine-pruning (Liu et al. 2018): prune the last conv layer's channels that are least
active on clean data, as far as clean validation accuracy allows, then fine-tune on
clean data. Also the original study's defense, magnitude pruning of the penultimate fc
layer's weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn.utils import prune
from tqdm.auto import tqdm

from ..core.checks import integer, positive
from ..core.models import SimpleCNN
from ..core.training import TrainConfig, activations, train_model
from ..core.column import Column
from .base import DefenderData, Defense, Repair, SharedConvMetrics, register


def channel_ranking(model: SimpleCNN, x_clean: torch.Tensor) -> torch.Tensor:
    """Last-conv channels ordered from least to most mean activation on clean images."""
    return mean_channel_activation(model, x_clean).argsort()


def mean_channel_activation(model: SimpleCNN, x: torch.Tensor) -> torch.Tensor:
    """Mean ReLU activation of each of the 64 last-conv channels over ``x``: [64]."""
    return activations(model, x, layer="last_conv").mean(dim=(0, 2, 3))


def pruned(model: SimpleCNN, channels: torch.Tensor) -> SimpleCNN:
    """A copy of ``model`` with ``channels`` of the last conv layer masked to zero."""
    out = copy.deepcopy(model)
    out.channel_mask[channels] = 0.0
    return out


def pruning_curve(
    model: SimpleCNN, ranking: torch.Tensor, evaluate, counts=None
) -> list[dict]:
    """``evaluate(pruned_model) -> dict`` after pruning the first n channels of
    ``ranking``, for each n in ``counts`` (default 0..63)."""
    counts = range(len(ranking)) if counts is None else counts
    return [
        {"channels_pruned": n, **evaluate(pruned(model, ranking[:n]))}
        for n in tqdm(counts, desc="pruning", leave=False)
    ]


def choose_prune_count(val_accuracies: list[float], max_val_drop: float) -> int:
    """Liu et al.'s stopping rule: prune channels in order and stop at the *first* count
    whose clean validation accuracy falls more than ``max_val_drop`` below the unpruned
    model's (they use 4%); returns the count just before it (all counts on the curve
    when none falls that far).
    """
    base = val_accuracies[0]
    for n, acc in enumerate(val_accuracies):
        if base - acc > max_val_drop:
            return n - 1
    return len(val_accuracies) - 1


def fine_tune(
    model: SimpleCNN,
    data: DefenderData,
    epochs: int = 5,
    max_lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    train=train_model,
) -> SimpleCNN:
    """Fine-tune a copy of ``model`` on the defender's clean tuning images (pruned
    channels stay pruned). ``train`` trains it:
    :func:`~backdoor_utils.training.train_model`, or anything called the same way
    (:func:`~backdoor_utils.experiments.train_on_data_cached` caches the result).
    """
    return train(
        data.x_tune,
        data.y_tune,
        TrainConfig(epochs=epochs, max_lr=max_lr, seed=seed),
        device,
        model=copy.deepcopy(model),
        desc="fine-tuning",
    )


def fc_pruned(model: SimpleCNN, amount: float) -> SimpleCNN:
    """The original study's defense: L1 magnitude pruning of ``amount`` of the
    penultimate fc weights."""
    out = copy.deepcopy(model)
    if amount > 0:
        prune.l1_unstructured(out.penultimate, name="weight", amount=amount)
        prune.remove(out.penultimate, "weight")
    return out


def validation_curve(
    model: SimpleCNN, ranking: torch.Tensor, defender: DefenderData
) -> list[float]:
    """Clean selection accuracy after pruning the first n channels of ``ranking``, n =
    0..63."""
    return _selection_accuracies(
        model, defender, [pruned(model, ranking[:n]) for n in range(len(ranking))]
    )


def _selection_accuracies(
    model: SimpleCNN, defender: DefenderData, variants
) -> list[float]:
    """Clean selection accuracy of head-only ``variants`` of ``model`` (conv features
    computed once)."""
    measure = SharedConvMetrics(
        model, {"val_acc": (defender.x_select, defender.y_select)}
    )
    return [measure(variant)["val_acc"] for variant in variants]


def choose_fc_amount(
    model: SimpleCNN, defender: DefenderData, amounts, max_val_drop: float
) -> float:
    """The study's fc-layer pruning with Liu et al.'s rule: the largest of the
    increasing ``amounts`` before the first whose clean selection accuracy drops more
    than ``max_val_drop``.
    """
    curve = _selection_accuracies(
        model, defender, [fc_pruned(model, a) for a in amounts]
    )
    return amounts[choose_prune_count(curve, max_val_drop)]


@register
@dataclass(frozen=True)
class FinePruning(Defense):
    """Liu et al.'s fine-pruning: channels ranked by mean clean activation, pruned up to
    the first count whose clean selection accuracy drops more than ``max_val_drop``,
    then fine-tuned for ``finetune_epochs`` on the defender's clean tuning images."""

    name = "fine_pruning"
    column = Column("ASR after", False, 0.05, "fine-\npruning", "repair")
    rules = {"max_val_drop": positive(1.0), "finetune_epochs": integer(1, 50)}
    max_val_drop: float = 0.04
    finetune_epochs: int = 5

    def repair(
        self,
        model: SimpleCNN,
        defender: DefenderData,
        seed: int = 0,
        device: str = "auto",
    ) -> Repair:
        ranking = channel_ranking(model, defender.x_tune)
        n_prune = choose_prune_count(
            validation_curve(model, ranking, defender), self.max_val_drop
        )
        tuned = fine_tune(
            pruned(model, ranking[:n_prune]),
            defender,
            epochs=self.finetune_epochs,
            seed=seed,
            device=device,
        )
        return Repair(tuned, {"n_pruned": n_prune, "ranking": ranking})
