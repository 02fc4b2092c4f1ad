"""WaNet (Nguyen & Tran 2021): a smooth, nearly invisible warping of the whole image as
trigger.

The warp: a k x k field of random 2-D offsets (uniform in [-1, 1], divided by its mean
absolute value), upsampled bicubically to 28 x 28, scaled by s / 28 and added to the
identity sampling grid (clamped to [-1, 1]); images are resampled on that grid
(bilinear). The paper's MNIST settings are k = 4 and s = 0.5. Its *noise mode* trains
the model to ignore warps that are not exactly this one: in every batch, cross_ratio
times as many clean images as there are poisons are warped with the trigger's grid plus
per-pixel random noise in [-1/28, 1/28] and keep their labels.

Deviation from the paper's training loop: the paper draws the poisoned images of each
batch anew; here, as for every attack of the book, a fixed share of the training set is
poisoned once (seeded) and the noise-mode images are drawn per batch, seeded, from the
rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..core.checks import integer, positive
from .base import Attack, PoisonedDataset, register


@dataclass(frozen=True)
class WarpTrigger:
    """Resampling on the identity grid plus a fixed, seeded smooth warp field."""

    k: int = 4
    s: float = 0.5
    seed: int = 2021

    def grid(self) -> torch.Tensor:
        """The sampling grid [1, 28, 28, 2] (x, y in [-1, 1], as ``grid_sample`` reads
        it)."""
        g = torch.Generator().manual_seed(self.seed)
        field = torch.rand(1, 2, self.k, self.k, generator=g) * 2 - 1
        field = field / field.abs().mean()
        smooth = F.interpolate(
            field, size=(28, 28), mode="bicubic", align_corners=True
        ).permute(0, 2, 3, 1)
        axis = torch.linspace(-1, 1, 28)
        rows, cols = torch.meshgrid(axis, axis, indexing="ij")
        identity = torch.stack((cols, rows), dim=-1)[None]
        return (identity + self.s * smooth / 28).clamp(-1, 1)

    def warp(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(
            x, grid.to(x.device, x.dtype).expand(len(x), -1, -1, -1), align_corners=True
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x, self.grid()) if len(x) else x.clone()

    def noisy_grids(
        self, n: int, generator: torch.Generator, base: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` grids of the noise mode: the trigger's grid plus per-pixel noise in
        [-1/28, 1/28]."""
        base = self.grid() if base is None else base
        noise = (torch.rand(n, 28, 28, 2, generator=generator) * 2 - 1) / 28
        return (base + noise.to(base.device)).clamp(-1, 1)

    def apply_noisy(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """``x`` warped as the noise mode warps its images (each its own seeded
        noise)."""
        grids = self.noisy_grids(len(x), torch.Generator().manual_seed(seed))
        return F.grid_sample(x, grids.to(x.device, x.dtype), align_corners=True)

    def spec(self) -> dict:
        return {"kind": "warp", **asdict(self)}


class NoiseModeHook:
    """WaNet's noise mode: per batch, ``rate`` x batch size clean (not poisoned) images
    warped with the trigger's grid plus random per-pixel noise in [-1/28, 1/28], labels
    kept."""

    def __init__(
        self,
        trigger: WarpTrigger,
        poison_mask: torch.Tensor,
        rate: float,
        seed: int = 0,
    ):
        self.trigger, self.poison_mask, self.rate = trigger, poison_mask, rate
        self.base = trigger.grid()
        self.generator = torch.Generator().manual_seed(seed)

    def parameters(self) -> list:
        return []

    def to(self, device) -> None:
        self.poison_mask = self.poison_mask.to(device)
        self.base = self.base.to(device)

    def transform(self, xb: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        clean = torch.nonzero(~self.poison_mask[index]).flatten().cpu()
        n = min(len(clean), round(self.rate * len(xb)))
        if n == 0:
            return xb
        chosen = clean[torch.randperm(len(clean), generator=self.generator)[:n]]
        grid = self.trigger.noisy_grids(n, self.generator, self.base)
        out = xb.clone()
        out[chosen.to(xb.device)] = F.grid_sample(
            xb[chosen.to(xb.device)], grid.to(xb.dtype), align_corners=True
        )
        return out.contiguous(memory_format=torch.channels_last)

    def state(self):
        return None  # nothing learned: the trigger is fixed


@register
@dataclass(frozen=True)
class WaNet(Attack):
    """Dirty-label poisoning with :class:`WarpTrigger` and the noise mode during
    training."""

    name = "wanet"
    rules = {
        "warp_k": integer(2, 28),
        "warp_s": positive(28.0),
        "cross_ratio": positive(10.0),
    }
    warp_k: int = 4
    warp_s: float = 0.5
    cross_ratio: float = 2.0

    def trigger(self, seed: int = 0) -> WarpTrigger:
        return WarpTrigger(self.warp_k, self.warp_s)

    def training_hook(self, poisoned: PoisonedDataset, seed: int = 0) -> NoiseModeHook:
        share = poisoned.n_poison / len(poisoned.y)
        return NoiseModeHook(
            self.trigger(seed), poisoned.is_poison, self.cross_ratio * share, seed
        )
