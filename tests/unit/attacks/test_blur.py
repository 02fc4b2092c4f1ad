"""The blur trigger (attacks.blur)."""

import torch

from backdoor_utils.attacks.blur import BlurTrigger


def test_blur_trigger_matches_torchvision_and_region_variant_only_touches_corner():
    from torchvision.transforms.functional import gaussian_blur

    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(BlurTrigger().apply(x), gaussian_blur(x, [5, 5], [1.0, 1.0]))
    corner = BlurTrigger(region=7).apply(x)
    assert torch.equal(corner[..., :21, :], x[..., :21, :])
