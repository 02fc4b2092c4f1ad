"""Backdoor triggers: functions from clean images [N,1,28,28] in [0,1] to triggered images.

Every trigger has ``apply(x)`` and ``spec()`` (a plain dict that identifies it in cache keys).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torchvision.transforms.functional import gaussian_blur

TRIGGERS = ("patch", "noise", "blur", "learned")


@dataclass(frozen=True)
class PatchTrigger:
    """A k x k patch stamped at (row, col) (BadNets, Gu et al. 2017). ``pattern`` None = white."""

    size: int = 3
    row: int = 24
    col: int = 24
    value: float = 1.0
    pattern: tuple | None = None  # k*k floats in [0,1], row-major; None = uniform ``value``

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        patch = self.value if self.pattern is None else torch.tensor(self.pattern, dtype=x.dtype, device=x.device).view(self.size, self.size)
        out[..., self.row : self.row + self.size, self.col : self.col + self.size] = patch
        return out

    def mask(self) -> torch.Tensor:
        """[28,28] float mask of the pixels the trigger sets."""
        m = torch.zeros(28, 28)
        m[self.row : self.row + self.size, self.col : self.col + self.size] = 1.0
        return m

    def spec(self) -> dict:
        return {"kind": "patch", **asdict(self)}


def corner_patch(size: int = 3, margin: int = 1, value: float = 1.0) -> PatchTrigger:
    """A white ``size`` x ``size`` square ``margin`` pixels from the bottom-right corner."""
    return PatchTrigger(size=size, row=28 - margin - size, col=28 - margin - size, value=value)


def study_patch() -> PatchTrigger:
    """The original study's "3x3" trigger, which was really ``x[:, :, -3:-1, -3:-1] = 1``: 2x2."""
    return PatchTrigger(size=2, row=25, col=25)


@dataclass(frozen=True)
class NoiseTrigger:
    """A fixed, seeded pattern, uniform in [-eps, eps] per pixel, added to the whole image and
    clamped to [0,1] (so L-inf <= eps)."""

    eps: float = 8 / 255
    seed: int = 1234

    def pattern(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return (torch.rand(1, 1, 28, 28, generator=g) * 2 - 1) * self.eps

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.pattern().to(x.device, x.dtype)).clamp_(0.0, 1.0)

    def spec(self) -> dict:
        return {"kind": "noise", **asdict(self)}


@dataclass(frozen=True)
class BlurTrigger:
    """Gaussian blur (torchvision ``gaussian_blur``) of the whole image, or of a corner region.

    ``region`` None blurs everything; an int r blurs only the bottom-right r x r corner, as the
    original study did.
    """

    kernel_size: int = 5
    sigma: float = 1.0
    region: int | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.region is None:
            return gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)
        out = x.clone()
        r = self.region
        out[..., -r:, -r:] = gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)[..., -r:, -r:]
        return out

    def spec(self) -> dict:
        return {"kind": "blur", **asdict(self)}


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
        """The learned values as a fixed :class:`PatchTrigger` (for evaluation and caching)."""
        vals = tuple(float(v) for v in self.values().detach().cpu().flatten())
        return PatchTrigger(size=self.size, row=self.row, col=self.col, pattern=vals)
