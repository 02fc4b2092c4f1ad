"""BadNets (Gu et al. 2017): a small fixed patch stamped on the poisons, relabelled to
the target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..core.checks import integer
from .base import Attack, register

#: the check of ``patch_size`` (shared by every patch-shaped attack)
PATCH_SIZE = integer(1, 14)


@dataclass(frozen=True)
class PatchTrigger:
    """A k x k patch stamped at (row, col). ``pattern`` None = uniform ``value``
    (white)."""

    size: int = 3
    row: int = 24
    col: int = 24
    value: float = 1.0
    pattern: tuple | None = (
        None  # k*k floats in [0,1], row-major; None = uniform ``value``
    )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        patch = (
            self.value
            if self.pattern is None
            else torch.tensor(self.pattern, dtype=x.dtype, device=x.device).view(
                self.size, self.size
            )
        )
        out[..., self.row : self.row + self.size, self.col : self.col + self.size] = (
            patch
        )
        return out

    def spec(self) -> dict:
        return {"kind": "patch", **asdict(self)}


def corner_patch(size: int = 3, margin: int = 1, value: float = 1.0) -> PatchTrigger:
    """A white ``size`` x ``size`` square ``margin`` pixels from the bottom-right
    corner."""
    return PatchTrigger(
        size=size, row=28 - margin - size, col=28 - margin - size, value=value
    )


@register
@dataclass(frozen=True)
class Patch(Attack):
    """The book's pixel trigger: a white ``patch_size`` square one pixel from the
    bottom-right corner."""

    name = "patch"
    rules = {"patch_size": PATCH_SIZE}
    patch_size: int = 3

    def trigger(self, seed: int = 0) -> PatchTrigger:
        return corner_patch(self.patch_size)


@register
@dataclass(frozen=True)
class StudyPatch(Attack):
    """The original study's "3x3" trigger, which was really ``x[:, :, -3:-1, -3:-1] =
    1``: 2x2."""

    name = "study_patch"

    def trigger(self, seed: int = 0) -> PatchTrigger:
        return PatchTrigger(size=2, row=25, col=25)
