"""Spectral signatures (detectors.spectral_signatures) on stand-in models whose
behaviour is known exactly."""

import pytest
import torch

from backdoor_utils import detectors
from backdoor_utils.detectors.spectral_signatures import (
    SpectralSignatures,
    direction_scores,
    outlier_scores,
)
from tests.unit.stand_ins import PixelFeatures


def _label_with_poisons(n_clean=900, n_poison=90, seed=0, pixels=slice(32, 64)):
    """One label's images: clean pixels uniform noise (non-negative, as ReLU features
    are), poisons shifted along one fixed non-negative direction in ``pixels`` (their
    signature) - images [n, 1, 28, 28], labels all 0, and the true flags."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_clean + n_poison, 1, 28, 28, generator=g)
    direction = torch.randn(32, generator=g).abs()
    x.view(len(x), -1)[n_clean:, pixels] += 3.2 * direction / direction.norm()
    truth = torch.zeros(len(x), dtype=torch.bool)
    truth[n_clean:] = True
    return x, torch.zeros(len(x), dtype=torch.long), truth


def _far_from_origin():
    g = torch.Generator().manual_seed(0)
    return torch.randn(200, 5, generator=g) * torch.tensor([5.0, 1, 1, 1, 1]) + 100


def test_reference_score_is_the_absolute_projection_of_uncentred_rows_on_the_centred_top_direction():
    reps = _far_from_origin()
    scores = outlier_scores(reps)
    centred = reps.double() - reps.double().mean(0)
    v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert abs(float(v[0])) > 0.95  # the high-variance axis, not the mean's direction
    assert torch.allclose(scores.double(), (reps.double() @ v).abs(), rtol=1e-5)
    # centring before projecting would give other scores (the paper's text, not the code)
    assert not torch.allclose(scores.double(), (centred @ v).abs(), rtol=1e-2)


def test_centred_squared_score_is_the_papers_squared_projection_of_centred_rows():
    reps = _far_from_origin()
    scores = outlier_scores(reps, scoring="centred_squared")
    centred = reps.double() - reps.double().mean(0)
    v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert torch.allclose(scores.double(), (centred @ v) ** 2, rtol=1e-5)


def test_direction_scores_flatten_feature_maps_and_return_the_singular_values():
    maps = _far_from_origin().repeat(1, 4).reshape(200, 5, 2, 2)
    scores, values = direction_scores(maps, n_directions=3)
    assert scores.shape == (200, 3) and values.shape == (3,)
    assert bool((values[:-1] >= values[1:]).all())


def test_spectral_signatures_remove_one_and_a_half_epsilon_of_each_label_and_catch_the_poisons():
    x, y, truth = _label_with_poisons()
    x2, y2, _ = _label_with_poisons(n_poison=0, seed=1)
    x, y = torch.cat([x, x2]), torch.cat([y, y2 + 1])
    truth = torch.cat([truth, torch.zeros(len(y2), dtype=torch.bool)])
    found = SpectralSignatures(epsilon=0.1).detect(PixelFeatures(), x, y)
    assert found.removed_per_label == {0: int(1.5 * 0.1 * 990), 1: int(1.5 * 0.1 * 900)}
    assert int(found.flags.sum()) == sum(found.removed_per_label.values())
    recall = float((found.flags & truth).sum() / truth.sum())
    assert recall >= 0.95


@pytest.mark.parametrize(
    "layer, pixels",
    [
        ("conv", slice(32, 64)),
        ("penultimate", slice(0, 32)),
        ("last_conv", slice(64, 96)),
    ],
)
def test_spectral_signatures_read_the_layer_asked_for_by_default_the_conv_features(
    layer, pixels
):
    x, y, truth = _label_with_poisons(pixels=pixels)
    kwargs = {} if layer == "conv" else {"layer": layer}
    found = SpectralSignatures(**kwargs).detect(PixelFeatures(), x, y)
    assert float((found.flags & truth).sum() / truth.sum()) >= 0.95
    # the other layers carry no signature: the same detector there finds few poisons
    other = "penultimate" if layer == "conv" else "conv"
    missed = SpectralSignatures(layer=other).detect(PixelFeatures(), x, y)
    assert float((missed.flags & truth).sum() / truth.sum()) < 0.5


def test_spectral_signatures_reject_unknown_parameters_by_name():
    with pytest.raises(ValueError, match="epsilon"):
        detectors.get("spectral_signatures", epsilon=1.5)
    with pytest.raises(ValueError, match="layer"):
        detectors.get("spectral_signatures", layer="fc")
    with pytest.raises(ValueError, match="scoring"):
        detectors.get("spectral_signatures", scoring="centred")


def test_the_truncated_decomposition_finds_the_full_svds_top_directions():
    """A label too large for a quick full SVD gets ARPACK's: the same singular values
    and, up to sign, the same vectors - so the same scores."""
    from backdoor_utils.detectors.spectral_signatures import top_singular

    g = torch.Generator().manual_seed(0)
    rows = torch.rand(600, 400, generator=g, dtype=torch.float64)
    rows[:60] += 0.5 * torch.rand(400, generator=g, dtype=torch.float64)
    centred = rows - rows.mean(0, keepdim=True)
    values, vectors = top_singular(centred, 3)
    _, full_values, full_vh = torch.linalg.svd(centred, full_matrices=False)
    assert torch.allclose(values, full_values[:3], rtol=1e-10)
    assert torch.allclose(
        (centred @ vectors.T).abs(), (centred @ full_vh[:3].T).abs(), atol=1e-9
    )
