"""Spectral signatures (detectors.spectral_signatures) on stand-in models whose
behaviour is known exactly."""

import pytest
import torch
from torch import nn

from backdoor_utils import detectors
from backdoor_utils.detectors.spectral_signatures import (
    SpectralSignatures,
    outlier_scores,
)


class Features(nn.Module):
    """Penultimate representations = the first 32 pixels of the image (known to the
    test); the conv layers see other pixels, where the poisons carry no signature."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Linear(1, 1)

    def penultimate_activations(self, x):
        return x.flatten(1)[:, :32]

    def conv_features(self, x):
        return x.flatten(1)[:, 32:64].reshape(len(x), 2, 4, 4)

    last_conv_activations = conv_features


def _label_with_poisons(n_clean=900, n_poison=90, seed=0):
    """One label's images: clean pixels noise, poisons shifted along one fixed direction
    (their signature) - images [n, 1, 28, 28], labels all 0, and the true flags."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_clean + n_poison, 1, 28, 28, generator=g)
    direction = torch.randn(32, generator=g)
    x.view(len(x), -1)[n_clean:, :32] += 0.8 * direction / direction.norm() * 4
    truth = torch.zeros(len(x), dtype=torch.bool)
    truth[n_clean:] = True
    return x, torch.zeros(len(x), dtype=torch.long), truth


def test_outlier_score_is_the_squared_projection_on_the_top_singular_direction_of_centred_data():
    g = torch.Generator().manual_seed(0)
    reps = (
        torch.randn(200, 5, generator=g) * torch.tensor([5.0, 1, 1, 1, 1]) + 100
    )  # far from the origin
    scores = outlier_scores(reps)
    centred = reps.double() - reps.double().mean(0)
    v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert torch.allclose(scores.double(), (centred @ v) ** 2, rtol=1e-5)
    assert abs(float(v[0])) > 0.95  # the high-variance axis, not the mean's direction


def test_spectral_signatures_remove_one_and_a_half_epsilon_of_each_label_and_catch_the_poisons():
    x, y, truth = _label_with_poisons()
    x2, y2, _ = _label_with_poisons(n_poison=0, seed=1)
    x, y = torch.cat([x, x2]), torch.cat([y, y2 + 1])
    truth = torch.cat([truth, torch.zeros(len(y2), dtype=torch.bool)])
    found = SpectralSignatures(epsilon=0.1).detect(Features(), x, y)
    assert found.removed_per_label == {0: int(1.5 * 0.1 * 990), 1: int(1.5 * 0.1 * 900)}
    assert int(found.flags.sum()) == sum(found.removed_per_label.values())
    recall = float((found.flags & truth).sum() / truth.sum())
    assert recall >= 0.95


def test_spectral_signatures_reject_an_epsilon_outside_the_unit_interval():
    with pytest.raises(ValueError, match="epsilon"):
        detectors.get("spectral_signatures", epsilon=1.5)
