"""What every attack is, and the registry that finds one by name.

An attack is a frozen dataclass whose fields are its own parameters (with their defaults
and a check each, in ``rules``). It gives its trigger, its poisoning policy and, when it
needs one, a hook that takes part in training (a trigger learned with the model).
Nothing below this layer (data, models, training, metrics) knows any particular attack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch

from ..core.codekey import keyed_elsewhere
from ..core.registry import Registry

# --- poisoned training sets
# ---------------------------------------------------------------------


@dataclass(frozen=True)
class PoisonedDataset:
    """Training images and labels after poisoning, with the ground-truth poison
    flags."""

    x: torch.Tensor
    y: torch.Tensor
    is_poison: torch.Tensor  # bool [N]
    original_y: torch.Tensor

    @property
    def n_poison(self) -> int:
        return int(self.is_poison.sum())


def draw_samples(
    candidates: torch.Tensor, n_poison: int, seed: int, what: str
) -> torch.Tensor:
    """``n_poison`` of the indices ``candidates``, drawn seeded without replacement,
    sorted (``what`` names the candidates in the error when too few exist)."""
    if n_poison > len(candidates):
        raise ValueError(
            f"poison_rate: asks for {n_poison} poisons but only {len(candidates)}"
            f" {what} exist"
        )
    g = torch.Generator().manual_seed(seed)
    return (
        candidates[torch.randperm(len(candidates), generator=g)[:n_poison]]
        .sort()
        .values
    )


def choose_poison_indices(
    y: torch.Tensor, target_label: int, poison_rate: float, seed: int
) -> torch.Tensor:
    """Dirty-label choice: ``round(poison_rate * N)`` samples (at least 1) drawn,
    seeded, from those whose label is not ``target_label`` (relabelling a target-class
    image would teach nothing).
    """
    candidates = torch.nonzero(y != target_label).flatten()
    return draw_samples(
        candidates, max(1, round(poison_rate * len(y))), seed, "non-target samples"
    )


def _stamped(x, y, idx, trigger, new_label) -> PoisonedDataset:
    is_poison = torch.zeros(len(y), dtype=torch.bool)
    is_poison[idx] = True
    x_out, y_out = x.clone(), y.clone()
    if trigger is not None:
        x_out[idx] = trigger.apply(x[idx])
    if new_label is not None:
        y_out[idx] = new_label
    return PoisonedDataset(x_out, y_out, is_poison, y.clone())


def dirty_label(
    x, y, trigger, target_label: int, poison_rate: float, seed: int = 0
) -> PoisonedDataset:
    """All-to-one dirty-label poisoning (BadNets): ``poison_rate`` of the training set,
    drawn from the non-target images, stamped with ``trigger`` and relabelled
    ``target_label``.

    ``trigger`` None flags and relabels without stamping (a trigger stamped during
    training).
    """
    return _stamped(
        x,
        y,
        choose_poison_indices(y, target_label, poison_rate, seed),
        trigger,
        target_label,
    )


def clean_label(
    x, y, trigger, target_label: int, poison_rate: float, seed: int = 0
) -> PoisonedDataset:
    """Clean-label poisoning: ``poison_rate`` of the *target class's* images (at least
    1) stamped with ``trigger``; every label is kept, so no training image is
    mislabelled."""
    candidates = torch.nonzero(y == target_label).flatten()
    idx = draw_samples(
        candidates,
        max(1, round(poison_rate * len(candidates))),
        seed,
        "target-class samples",
    )
    return _stamped(x, y, idx, trigger, None)


POLICIES = {"dirty-label": dirty_label, "clean-label": clean_label}


@keyed_elsewhere(
    "an experiment's keys read its attack's policy function itself (Experiment.code)"
)
def policy_function(policy: str):
    """The poisoning function of ``policy`` ("dirty-label" or "clean-label")."""
    return POLICIES[policy]


# --- the attack protocol
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """Base of every attack: subclasses are frozen dataclasses that set ``name``,
    optionally ``policy`` ("dirty-label" all-to-one, or "clean-label") and ``rules``
    (field -> check), and implement :meth:`trigger`. Parameters are checked when the
    attack is built."""

    name: ClassVar[str] = ""
    policy: ClassVar[str] = "dirty-label"
    rules: ClassVar[dict] = {}
    #: True when the trigger is stamped by the training hook (poisons are only flagged
    #: and relabelled before training)
    stamps_during_training: ClassVar[bool] = False

    def __post_init__(self):
        for f in fields(self):
            if f.name in self.rules:
                self.rules[f.name](f.name, getattr(self, f.name))

    def trigger(self, seed: int = 0):
        """The trigger (``apply(x)`` and ``spec()``) of this attack for the run seeded
        ``seed``."""
        raise NotImplementedError

    def parameters(self) -> dict:
        """This attack's own parameters and their values."""
        return asdict(self)

    def spec(self, seed: int = 0) -> dict:
        """Everything that identifies this attack's poisoning (part of model cache
        keys)."""
        return {
            "name": self.name,
            "policy": self.policy,
            "parameters": self.parameters(),
            "trigger": self.trigger(seed).spec(),
        }

    def poison(
        self, x, y, target_label: int, poison_rate: float, seed: int = 0, trigger=None
    ) -> PoisonedDataset:
        """The poisoned training set under this attack's policy (``trigger`` defaults to
        :meth:`trigger`; a hook-stamped attack flags without stamping unless given one).
        """
        if trigger is None and not self.stamps_during_training:
            trigger = self.trigger(seed)
        return policy_function(self.policy)(
            x, y, trigger, target_label, poison_rate, seed
        )

    def training_hook(self, poisoned: PoisonedDataset, seed: int = 0):
        """A :class:`~backdoor_utils.training.TrainingHook` that takes part in training,
        or None."""
        return None

    def trained_trigger(self, hook_state: dict, seed: int = 0):
        """The trigger after training, from the hook's saved state (attacks with a
        hook)."""
        raise NotImplementedError


# --- the registry
# ----------------------------------------------------------------------------------


def _check_attack(cls: type[Attack]) -> None:
    """An attack's name is not the clean run's ("none") and its policy is known."""
    if cls.name == "none":
        raise ValueError(
            f"attack name: must be a non-empty name other than 'none', got {cls.name!r}"
        )
    if cls.policy not in POLICIES:
        raise ValueError(
            f"policy: must be one of {', '.join(map(repr, POLICIES))}, got"
            f" {cls.policy!r}"
        )


_REGISTRY = Registry("attack", check=_check_attack)
#: The registered attacks by name.
REGISTRY: dict[str, type[Attack]] = _REGISTRY.classes
register, names, get = _REGISTRY.register, _REGISTRY.names, _REGISTRY.get


def parameter_rules() -> dict:
    """Every registered attack's parameter checks, by parameter name (shared names, one
    check)."""
    out = {}
    for cls in REGISTRY.values():
        for name, check in cls.rules.items():
            if out.setdefault(name, check) is not check:
                raise ValueError(
                    f"{name}: two attacks declare different checks for it; share one"
                )
    return out
