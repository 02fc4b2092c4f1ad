"""What every model-repair defense shares: the defender's clean data, the metrics it may
read and the reader's, and the protocol and registry of defenses.

A defense uses clean data only and no knowledge of the trigger. It may choose its
hyper-parameters on its clean *selection* images (``val_acc``), never on the test ASR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..core.data import Splits
from ..core.metrics import attack_success_rate, clean_accuracy, non_target_mask
from ..core.models import SimpleCNN
from ..core.column import Column
from ..core.registry import Registry, check_rules
from ..core.training import activations, predict


@dataclass(frozen=True)
class DefenderData:
    """The defender's clean data: images to tune on and a disjoint set to choose
    hyper-parameters."""

    x_tune: torch.Tensor
    y_tune: torch.Tensor
    x_select: torch.Tensor
    y_select: torch.Tensor


def defender_data(
    splits: Splits, n_tune: int = 5000, n_select: int = 1000
) -> DefenderData:
    """Split the clean validation set (never trained on) into tuning and selection
    parts."""
    if n_tune + n_select > len(splits.y_val):
        raise ValueError(
            f"n_clean_finetune: at most {len(splits.y_val) - n_select} clean images are"
            f" available, got {n_tune}"
        )
    return DefenderData(
        splits.x_val[:n_tune],
        splits.y_val[:n_tune],
        splits.x_val[-n_select:],
        splits.y_val[-n_select:],
    )


def accuracy(model, x, y) -> float:
    return float((predict(model, x) == y).float().mean())


def defense_metrics(
    model, defender: DefenderData, splits: Splits, trigger, target_label: int
) -> dict:
    """What the defender sees (accuracy on its clean selection images) and what the
    reader sees (test clean accuracy and ASR). No defense choice may read the last two.
    """
    return {
        "val_acc": accuracy(model, defender.x_select, defender.y_select),
        "clean_acc": clean_accuracy(model, splits.x_test, splits.y_test),
        "asr": attack_success_rate(
            model, splits.x_test, splits.y_test, trigger, target_label
        ),
    }


@dataclass(frozen=True)
class Measure:
    """:func:`defense_metrics` bound to one attack's data: ``measure(model) ->
    dict``."""

    defender: DefenderData
    splits: Splits
    trigger: object
    target_label: int

    def __call__(self, model) -> dict:
        return defense_metrics(
            model, self.defender, self.splits, self.trigger, self.target_label
        )

    def shared(self, model: SimpleCNN) -> "SharedConvMetrics":
        """The same numbers for head-only variants of ``model``, from conv features
        computed once."""
        return SharedConvMetrics.of_defense(
            model, self.defender, self.splits, self.trigger, self.target_label
        )


def _same_convs(a: SimpleCNN, b: SimpleCNN) -> bool:
    return all(
        torch.equal(p.detach().cpu(), q.detach().cpu())
        for layer in ("conv1", "conv2")
        for p, q in zip(getattr(a, layer).parameters(), getattr(b, layer).parameters())
    )


class SharedConvMetrics:
    """Accuracies of many variants of one model that differ only after its conv layers
    (a pruned channel mask, pruned fc weights): every image set passes through the conv
    layers once, and each variant runs only its head on those features.

    ``sets`` maps a metric name to ``(images, labels)``, where ``labels`` may be one
    class for all (the ASR's target). Exact, not an approximation: the variants' own
    forward passes compute the same conv features. A variant whose conv weights differ
    from the base model's is refused.
    """

    def __init__(self, model: SimpleCNN, sets: dict):
        self.model = model
        self.sets = {
            name: (activations(model, x, layer="conv"), labels)
            for name, (x, labels) in sets.items()
        }

    @classmethod
    def of_defense(
        cls,
        model: SimpleCNN,
        defender: DefenderData,
        splits: Splits,
        trigger,
        target_label: int,
    ):
        """The three numbers of :func:`defense_metrics`."""
        keep = non_target_mask(splits.y_test, target_label)
        return cls(
            model,
            {
                "val_acc": (defender.x_select, defender.y_select),
                "clean_acc": (splits.x_test, splits.y_test),
                "asr": (trigger.apply(splits.x_test[keep]), target_label),
            },
        )

    @torch.inference_mode()
    def __call__(self, variant: SimpleCNN) -> dict:
        if not _same_convs(self.model, variant):
            raise ValueError(
                "variant: its conv layers differ from the base model's; use"
                " defense_metrics"
            )
        variant.eval()
        dev = next(variant.parameters()).device
        out = {}
        for name, (features, labels) in self.sets.items():
            preds = torch.cat(
                [
                    variant.head(features[s : s + 4096].to(dev)).argmax(1).cpu()
                    for s in range(0, len(features), 4096)
                ]
            )
            out[name] = float((preds == labels).float().mean())
        return out


# --- the defense protocol
# ------------------------------------------------------------------------


@dataclass
class Repair:
    """A defense's repaired model and what it decided on the way (for the reader)."""

    model: SimpleCNN
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Defense:
    """Base of every model-repair defense: subclasses are frozen dataclasses whose
    fields are the defense's parameters (checked by ``rules`` when built), set ``name``
    and implement :meth:`repair`."""

    name: ClassVar[str] = ""
    rules: ClassVar[dict] = {}
    #: the defense's column in the attack x defense matrix (None: not in it)
    column: ClassVar[Column | None] = None

    def __post_init__(self):
        check_rules(self)

    def repair(
        self,
        model: SimpleCNN,
        defender: DefenderData,
        seed: int = 0,
        device: str = "auto",
    ) -> Repair:
        """The repaired model, from ``model`` and the defender's clean data only."""
        raise NotImplementedError


_REGISTRY = Registry("defense")
REGISTRY = _REGISTRY.classes
register, names, get = _REGISTRY.register, _REGISTRY.names, _REGISTRY.get
