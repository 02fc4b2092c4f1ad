"""A learned patch: the trigger's pixel values are optimised jointly with the model, on
the poisoned samples only (the training hook stamps them batch by batch), with a step
size of its own (``trigger_lr_scale`` times the model's learning rate)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.checks import positive
from .base import Attack, PoisonedDataset, register
from .patch import PATCH_SIZE, PatchTrigger


@dataclass
class LearnedPatchTrigger:
    """A k x k patch whose pixel values (sigmoid of its logits, so always in [0,1]) are
    optimised jointly with the model; placed at (row, col).

    The optimiser updates ``raw`` and the logits are ``step_scale * raw``. Adam's step
    is about its learning rate whatever the size of the gradient, so the logits move
    ``step_scale`` times as far per step as under the model's learning rate: the
    trigger's own step size, on the model's schedule and optimiser. ``step_scale`` 1 is
    the plain joint optimisation."""

    size: int = 4
    row: int = 23
    col: int = 23
    init_seed: int = 0
    step_scale: float = 1.0
    initial_logits: torch.Tensor = field(
        default=None, repr=False
    )  # None: drawn from init_seed

    def __post_init__(self):
        start = self.initial_logits
        if start is None:
            start = torch.randn(
                self.size,
                self.size,
                generator=torch.Generator().manual_seed(self.init_seed),
            )
        self.raw = (start.detach() / self.step_scale).clone().requires_grad_(True)

    @property
    def logits(self) -> torch.Tensor:
        return self.step_scale * self.raw

    def values(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(1, 1, 28, 28, dtype=x.dtype, device=x.device)
        mask[..., self.row : self.row + self.size, self.col : self.col + self.size] = (
            1.0
        )
        patch = torch.nn.functional.pad(
            self.values().to(x.device, x.dtype),
            (self.col, 28 - self.col - self.size, self.row, 28 - self.row - self.size),
        ).view(1, 1, 28, 28)
        return x * (1 - mask) + patch

    def spec(self) -> dict:
        """The initial trigger (the learned values depend on training, cached with the
        model)."""
        return {
            "kind": "learned",
            "size": self.size,
            "row": self.row,
            "col": self.col,
            "init_seed": self.init_seed,
        }

    def frozen(self) -> PatchTrigger:
        """The learned values as a fixed
        :class:`~backdoor_utils.attacks.patch.PatchTrigger`."""
        vals = tuple(float(v) for v in self.values().detach().cpu().flatten())
        return PatchTrigger(size=self.size, row=self.row, col=self.col, pattern=vals)


class LearnedPatchHook:
    """Training hook: stamps the current learned patch on the poisoned samples of each
    batch and hands its parameters to the optimiser, so the patch is trained on the same
    loss as the model.
    """

    def __init__(self, trigger: LearnedPatchTrigger, poison_mask: torch.Tensor):
        self.trigger, self.poison_mask = trigger, poison_mask

    def parameters(self) -> list:
        return [self.trigger.raw]

    def to(self, device) -> None:
        self.trigger.raw.data = self.trigger.raw.data.to(device)
        self.poison_mask = self.poison_mask.to(device)

    def transform(self, xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        flags = self.poison_mask[index]
        if not flags.any():
            return xb
        out = torch.where(flags.view(-1, 1, 1, 1), self.trigger.apply(xb), xb)
        return out.contiguous(memory_format=torch.channels_last)

    def state(self) -> dict:
        return {"trigger_logits": self.trigger.logits.detach().cpu()}


def _corner(
    size: int, seed: int, logits=None, step_scale: float = 1.0
) -> LearnedPatchTrigger:
    return LearnedPatchTrigger(
        size=size,
        row=27 - size,
        col=27 - size,
        init_seed=seed,
        step_scale=step_scale,
        initial_logits=logits,
    )


def pixel_change(trained: PatchTrigger, start: PatchTrigger) -> float:
    """How far training moved a learned patch: the largest change of any of its pixels
    from ``start`` (pixel values lie in [0, 1])."""
    return max(abs(a - b) for a, b in zip(trained.pattern, start.pattern))


@register
@dataclass(frozen=True)
class Learned(Attack):
    """Dirty-label poisoning whose ``patch_size`` patch (bottom-right corner, random
    start seeded by the run's seed) is learned with the model, its logits moving
    ``trigger_lr_scale`` times as far per step as under the model's learning rate (1:
    the model's own step size)."""

    name = "learned"
    rules = {"patch_size": PATCH_SIZE, "trigger_lr_scale": positive(1000.0)}
    stamps_during_training = True
    patch_size: int = 4
    trigger_lr_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        # 1 and 1.0 are one attack (and one cache entry)
        object.__setattr__(self, "trigger_lr_scale", float(self.trigger_lr_scale))

    def trigger(self, seed: int = 0) -> LearnedPatchTrigger:
        """The initial (untrained) patch."""
        return _corner(self.patch_size, seed, step_scale=self.trigger_lr_scale)

    def training_hook(
        self, poisoned: PoisonedDataset, seed: int = 0
    ) -> LearnedPatchHook:
        return LearnedPatchHook(self.trigger(seed), poisoned.is_poison)

    def trained_trigger(self, hook_state: dict, seed: int = 0) -> PatchTrigger:
        return _corner(self.patch_size, seed, hook_state["trigger_logits"]).frozen()


@register
@dataclass(frozen=True)
class InitialPatch(Attack):
    """The control for :class:`Learned`: its own initial values, frozen and never
    trained."""

    name = "initial_patch"
    rules = {"patch_size": PATCH_SIZE}
    patch_size: int = 4

    def trigger(self, seed: int = 0) -> PatchTrigger:
        return _corner(self.patch_size, seed).frozen()
