"""WaNet (Nguyen & Tran 2021): a smooth, nearly invisible warping of the whole image as
trigger.

The warp: a k x k field of random 2-D offsets (uniform in [-1, 1], divided by its mean
absolute value), upsampled bicubically to 28 x 28, scaled by s / 28 and added to the
identity sampling grid (clamped to [-1, 1]); images are resampled on that grid
(bilinear). The paper's MNIST settings are k = 4 and s = 0.5. Its *noise mode* trains
the model to ignore warps that are not exactly this one: in every batch, cross_ratio
times as many clean images as there are poisons are warped with the trigger's grid plus
per-pixel random noise in [-1/28, 1/28] and keep their labels.

The authors' code then augments every training batch after warping (their
``PostTensorTransform`` for MNIST): with probability 0.8 a random crop with 5 pixels of
zero padding (each image its own shift of -5 to 5 pixels per axis), and with probability
0.5 a random rotation of up to 10 degrees, applied to each image with probability 0.5
(the augmentation library's own default); no flip for digits. :class:`PostWarpAugment`
does the same, seeded (``post_augment=False`` leaves it out).

Deviation from the paper's training loop: the paper draws the poisoned images of each
batch anew; here, as for every attack of the book, a fixed share of the training set is
poisoned once (seeded) and the noise-mode images are drawn per batch, seeded, from the
rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..core.checks import choice, integer, positive
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


@dataclass(frozen=True)
class PostWarpAugment:
    """The WaNet authors' augmentation of every training batch: a padded random crop
    with probability ``crop_p`` for the batch, then with probability ``rotate_p`` for
    the batch a rotation of each image, with probability ``image_rotate_p``, by an
    angle uniform in [-``degrees``, ``degrees``]."""

    padding: int = 5
    crop_p: float = 0.8
    degrees: float = 10.0
    rotate_p: float = 0.5
    image_rotate_p: float = 0.5

    def crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image shifted by its own whole number of pixels in [-padding,
        padding] per axis, zeros shifted in (a 28 x 28 crop of the zero-padded
        image)."""
        n, pad, size = len(x), self.padding, x.shape[-1]
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
        span = torch.arange(size)
        rows = (offsets[0][:, None] + span).to(x.device)
        cols = (offsets[1][:, None] + span).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        picked = padded[
            torch.arange(n, device=x.device)[:, None, None],
            :,
            rows[:, :, None],
            cols[:, None, :],
        ]
        return picked.permute(0, 3, 1, 2)

    def rotate(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image, with probability ``image_rotate_p``, rotated about its centre by
        its own angle (bilinear, zeros outside)."""
        n = len(x)
        angle = (torch.rand(n, generator=generator) * 2 - 1) * self.degrees
        chosen = torch.rand(n, generator=generator) < self.image_rotate_p
        radians = torch.deg2rad(angle * chosen)
        cos, sin, zero = radians.cos(), radians.sin(), torch.zeros(n)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), False)
        return F.grid_sample(x, grid, align_corners=False)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=generator)) < self.crop_p:
            x = self.crop(x, generator)
        if float(torch.rand((), generator=generator)) < self.rotate_p:
            x = self.rotate(x, generator)
        return x


class NoiseModeHook:
    """WaNet's noise mode: per batch, ``rate`` x batch size clean (not poisoned) images
    warped with the trigger's grid plus random per-pixel noise in [-1/28, 1/28], labels
    kept; then, with an ``augment``, the whole batch augmented."""

    def __init__(
        self,
        trigger: WarpTrigger,
        poison_mask: torch.Tensor,
        rate: float,
        seed: int = 0,
        augment: PostWarpAugment | None = None,
    ):
        self.trigger, self.poison_mask, self.rate = trigger, poison_mask, rate
        self.augment = augment
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
        out = xb
        if n > 0:
            chosen = clean[torch.randperm(len(clean), generator=self.generator)[:n]]
            grid = self.trigger.noisy_grids(n, self.generator, self.base)
            out = xb.clone()
            out[chosen.to(xb.device)] = F.grid_sample(
                xb[chosen.to(xb.device)], grid.to(xb.dtype), align_corners=True
            )
        if self.augment is not None:
            out = self.augment(out, self.generator)
        return out.contiguous(memory_format=torch.channels_last)

    def state(self):
        return None  # nothing learned: the trigger is fixed


@register
@dataclass(frozen=True)
class WaNet(Attack):
    """Dirty-label poisoning with :class:`WarpTrigger`, the noise mode and (unless
    ``post_augment`` is False) the authors' post-warp augmentation during training."""

    name = "wanet"
    rules = {
        "warp_k": integer(2, 28),
        "warp_s": positive(28.0),
        "cross_ratio": positive(10.0),
        "post_augment": choice((True, False)),
    }
    warp_k: int = 4
    warp_s: float = 0.5
    cross_ratio: float = 2.0
    post_augment: bool = True

    def trigger(self, seed: int = 0) -> WarpTrigger:
        return WarpTrigger(self.warp_k, self.warp_s)

    def training_hook(self, poisoned: PoisonedDataset, seed: int = 0) -> NoiseModeHook:
        share = poisoned.n_poison / len(poisoned.y)
        return NoiseModeHook(
            self.trigger(seed),
            poisoned.is_poison,
            self.cross_ratio * share,
            seed,
            PostWarpAugment() if self.post_augment else None,
        )
