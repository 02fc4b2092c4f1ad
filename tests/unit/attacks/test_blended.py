"""Blended (attacks.blended): a fixed seeded key blended with weight alpha."""

import torch

from backdoor_utils.orchestration.experiments import (
    Experiment,
)


def test_blended_trigger_blends_a_fixed_seeded_key_with_weight_alpha():
    from backdoor_utils.attacks.blended import BlendedTrigger
    from backdoor_utils.core.metrics import distortion

    x = torch.rand(4, 1, 28, 28)
    trig = BlendedTrigger(alpha=0.2)
    assert torch.allclose(trig.apply(x), 0.2 * trig.key() + 0.8 * x)
    assert torch.equal(
        trig.key(), BlendedTrigger(alpha=0.5).key()
    )  # one key, any alpha
    psnr = [
        float(distortion(x, BlendedTrigger(alpha=a).apply(x))["psnr_db"].median())
        for a in (0.05, 0.1, 0.2)
    ]
    assert psnr[0] > psnr[1] > psnr[2]  # more blending, more distortion
    assert Experiment("blended", blend_alpha=0.1).trigger().alpha == 0.1
