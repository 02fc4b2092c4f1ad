"""A learned patch: the trigger's pixel values are optimised jointly with the model, on the
poisoned samples only (the training hook stamps them batch by batch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Attack, PoisonedDataset, register
from .patch import PATCH_SIZE, PatchTrigger


@dataclass
class LearnedPatchTrigger:
    """A k x k patch whose pixel values (sigmoid of free logits, so always in [0,1]) are optimised
    jointly with the model; placed at (row, col)."""

    size: int = 4
    row: int = 23
    col: int = 23
    init_seed: int = 0
    logits: torch.Tensor = field(default=None, repr=False)

    def __post_init__(self):
        if self.logits is None:
            g = torch.Generator().manual_seed(self.init_seed)
            self.logits = torch.randn(self.size, self.size, generator=g)
        self.logits = self.logits.detach().clone().requires_grad_(True)

    def values(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(1, 1, 28, 28, dtype=x.dtype, device=x.device)
        mask[..., self.row : self.row + self.size, self.col : self.col + self.size] = 1.0
        patch = torch.nn.functional.pad(
            self.values().to(x.device, x.dtype),
            (self.col, 28 - self.col - self.size, self.row, 28 - self.row - self.size),
        ).view(1, 1, 28, 28)
        return x * (1 - mask) + patch

    def spec(self) -> dict:
        """The initial trigger (the learned values depend on training, cached with the model)."""
        return {"kind": "learned", "size": self.size, "row": self.row, "col": self.col, "init_seed": self.init_seed}

    def frozen(self) -> PatchTrigger:
        """The learned values as a fixed :class:`~backdoor_utils.attacks.patch.PatchTrigger`."""
        vals = tuple(float(v) for v in self.values().detach().cpu().flatten())
        return PatchTrigger(size=self.size, row=self.row, col=self.col, pattern=vals)


class LearnedPatchHook:
    """Training hook: stamps the current learned patch on the poisoned samples of each batch and
    hands its logits to the optimiser, so the patch is trained on the same loss as the model."""

    def __init__(self, trigger: LearnedPatchTrigger, poison_mask: torch.Tensor):
        self.trigger, self.poison_mask = trigger, poison_mask

    def parameters(self) -> list:
        return [self.trigger.logits]

    def to(self, device) -> None:
        self.trigger.logits.data = self.trigger.logits.data.to(device)
        self.poison_mask = self.poison_mask.to(device)

    def transform(self, xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        flags = self.poison_mask[index]
        if not flags.any():
            return xb
        out = torch.where(flags.view(-1, 1, 1, 1), self.trigger.apply(xb), xb)
        return out.contiguous(memory_format=torch.channels_last)

    def state(self) -> dict:
        return {"trigger_logits": self.trigger.logits.detach().cpu()}


def _corner(size: int, seed: int, logits=None) -> LearnedPatchTrigger:
    return LearnedPatchTrigger(size=size, row=27 - size, col=27 - size, init_seed=seed, logits=logits)


@register
@dataclass(frozen=True)
class Learned(Attack):
    """Dirty-label poisoning whose ``patch_size`` patch (bottom-right corner, random start seeded by
    the run's seed) is learned with the model."""

    name = "learned"
    rules = {"patch_size": PATCH_SIZE}
    stamps_during_training = True
    patch_size: int = 4

    def trigger(self, seed: int = 0) -> LearnedPatchTrigger:
        """The initial (untrained) patch."""
        return _corner(self.patch_size, seed)

    def training_hook(self, poisoned: PoisonedDataset, seed: int = 0) -> LearnedPatchHook:
        return LearnedPatchHook(self.trigger(seed), poisoned.is_poison)

    def trained_trigger(self, hook_state: dict, seed: int = 0) -> PatchTrigger:
        return _corner(self.patch_size, seed, hook_state["trigger_logits"]).frozen()


@register
@dataclass(frozen=True)
class InitialPatch(Attack):
    """The control for :class:`Learned`: its own initial values, frozen and never trained."""

    name = "initial_patch"
    rules = {"patch_size": PATCH_SIZE}
    patch_size: int = 4

    def trigger(self, seed: int = 0) -> PatchTrigger:
        return _corner(self.patch_size, seed).frozen()
