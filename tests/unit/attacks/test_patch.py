"""The pixel patch (attacks.patch)."""

import torch

from backdoor_utils import attacks
from backdoor_utils.attacks.patch import corner_patch


def test_corner_patch_is_3x3_white_one_pixel_from_corner():
    x = torch.zeros(2, 1, 28, 28)
    out = corner_patch(3).apply(x)
    assert out.sum() == 2 * 9
    assert out[0, 0, 24:27, 24:27].eq(1).all()
    assert out[0, 0, 27].sum() == 0 and out[0, 0, :, 27].sum() == 0
    assert x.sum() == 0  # input untouched


def test_study_patch_is_really_2x2():
    out = attacks.get("study_patch").trigger().apply(torch.zeros(1, 1, 28, 28))
    assert out.sum() == 4
