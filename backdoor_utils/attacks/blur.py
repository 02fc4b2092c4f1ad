"""A semantic trigger: Gaussian blur of the whole image (or, as the original study did,
a corner)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..core.checks import odd_kernel, positive
from .base import Attack, register


@dataclass(frozen=True)
class BlurTrigger:
    """Gaussian blur (torchvision ``gaussian_blur``) of the whole image, or of a corner
    region.

    ``region`` None blurs everything; an int r blurs only the bottom-right r x r corner,
    as the original study did.
    """

    kernel_size: int = 5
    sigma: float = 1.0
    region: int | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # imported here: torchvision costs seconds to import, and the command line's
        # processes (``backdoor-book``, every Dask worker) import the attacks without
        # blurring anything
        from torchvision.transforms.functional import gaussian_blur

        if self.region is None:
            return gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)
        out = x.clone()
        r = self.region
        out[..., -r:, -r:] = gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)[
            ..., -r:, -r:
        ]
        return out

    def spec(self) -> dict:
        return {"kind": "blur", **asdict(self)}


@register
@dataclass(frozen=True)
class Blur(Attack):
    """Dirty-label poisoning with the whole image blurred."""

    name = "blur"
    rules = {"blur_kernel": odd_kernel, "blur_sigma": positive(10.0)}
    blur_kernel: int = 5
    blur_sigma: float = 1.0

    def trigger(self, seed: int = 0) -> BlurTrigger:
        return BlurTrigger(self.blur_kernel, self.blur_sigma)


@register
@dataclass(frozen=True)
class StudyBlur(Blur):
    """The original study's blur: only the bottom-right 7 x 7 corner blurred."""

    name = "study_blur"

    def trigger(self, seed: int = 0) -> BlurTrigger:
        return BlurTrigger(self.blur_kernel, self.blur_sigma, region=7)
