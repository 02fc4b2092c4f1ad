"""Activation clustering (detectors.activation_clustering)."""

import numpy as np
import pytest
import torch

from backdoor_utils.detectors import activation_clustering as detection


def _blobs(seed=0):
    """Two labels; label 0 holds a big blob and a small far-away blob (the 'poison')."""
    rng = np.random.default_rng(seed)
    big = rng.normal(0, 1, size=(400, 20))
    small = rng.normal(8, 1, size=(40, 20))
    other = rng.normal(-3, 1, size=(400, 20))
    acts = torch.tensor(np.vstack([big, small, other]), dtype=torch.float32)
    labels = torch.tensor([0] * 440 + [1] * 400)
    truth = torch.zeros(840, dtype=torch.bool)
    truth[400:440] = True
    return acts, labels, truth


@pytest.mark.parametrize("reduction", ["ica", "pca"])
def test_two_means_with_size_rule_finds_a_separated_small_cluster(reduction):
    acts, labels, truth = _blobs()
    clusterings = detection.cluster_activations(
        acts, labels, k=2, n_components=5, reduction=reduction
    )
    label0 = next(c for c in clusterings if c.label == 0)
    assert sorted(np.round(label0.relative_sizes, 3)) == [
        round(40 / 440, 3),
        round(400 / 440, 3),
    ]
    flags = detection.flag_small_clusters([label0], 840, size_threshold=0.35)
    assert torch.equal(flags, truth)


def test_silhouette_picks_the_true_number_of_clusters():
    rng = np.random.default_rng(1)
    centers = np.array([[0] * 10, [10] * 10, [-10] * 10])
    acts = torch.tensor(
        np.vstack([rng.normal(c, 0.5, size=(100, 10)) for c in centers]),
        dtype=torch.float32,
    )
    clusterings = detection.cluster_activations(
        acts,
        torch.zeros(300, dtype=torch.long),
        k="silhouette",
        max_clusters=5,
        n_components=5,
        reduction="pca",
    )
    assert clusterings[0].k == 3
    assert set(clusterings[0].silhouettes) == {2, 3, 4, 5}


def test_exclusionary_reclassification_flags_relabelled_cluster_only(splits):
    # a training set where 60 images of digit 1 are relabelled 0 and form their own
    # cluster
    x, y = splits.x_train, splits.y_train.clone()
    ones = (y == 1).nonzero().flatten()[:60]
    y[ones] = 0
    zeros = (y == 0).nonzero().flatten()
    assign = np.isin(zeros.numpy(), ones.numpy()).astype(int)
    fake = [
        detection.ClassClustering(
            0, zeros.numpy(), np.zeros((len(zeros), 2)), assign, 2, 0.9
        )
    ]
    result = detection.exclusionary_reclassification(
        fake, x, y, epochs=4, seed=0, device="cpu"
    )
    assert result.table[0]["flagged"] is True and result.table[0]["source_class"] == 1
    truth = torch.zeros(len(y), dtype=torch.bool)
    truth[ones] = True
    assert torch.equal(result.flags, truth)
    # the paper's repair: each flagged image gets its source class, never the label it
    # carried
    restored = result.relabelled(y)
    assert torch.equal(restored[~truth], y[~truth])
    assert (restored[ones] != 0).all() and (restored[ones] == 1).float().mean() >= 0.9


def test_the_reclassifier_is_trained_without_any_candidate_cluster():
    # exclusionary: the model that judges a candidate never saw it (else it would learn
    # its label)
    from backdoor_utils.core.models import SimpleCNN

    x = (
        torch.arange(300, dtype=torch.float32).view(300, 1, 1, 1).expand(300, 1, 28, 28)
        / 300
    )  # row i: value i/300
    y = torch.arange(300) % 2
    zeros = (y == 0).nonzero().flatten()
    assign = (
        (torch.arange(len(zeros)) < 20).long().numpy()
    )  # the first 20 zeros: a small cluster
    fake = [
        detection.ClassClustering(
            0, zeros.numpy(), np.zeros((len(zeros), 2)), assign, 2, 0.9
        )
    ]
    seen = {}

    def train(xs, ys, config, device):
        seen.update(rows=set((xs[:, 0, 0, 0] * 300).round().long().tolist()), labels=ys)
        return SimpleCNN()

    detection.exclusionary_reclassification(fake, x, y, train=train)
    candidates = set(zeros[:20].tolist())
    assert seen["rows"] == set(range(300)) - candidates and len(seen["labels"]) == 280


def test_no_label_is_ever_suspected_whole_even_when_every_cluster_is_small():
    # four equal clusters in one label: each holds 25% <= 35%, yet the largest must stay
    rng = np.random.default_rng(2)
    centers = np.eye(10)[:4] * 20
    acts = torch.tensor(
        np.vstack([rng.normal(c, 0.5, size=(100, 10)) for c in centers]),
        dtype=torch.float32,
    )
    clusterings = detection.cluster_activations(
        acts, torch.zeros(400, dtype=torch.long), k=4, n_components=5, reduction="pca"
    )
    candidates = detection.candidate_clusters(clusterings, size_threshold=0.35)
    assert len(candidates) == 3
    assert sum(len(idx) for _, _, idx in candidates) == 300
    assert detection.flag_small_clusters(clusterings, 400).sum() == 300


def test_a_label_below_the_silhouette_gate_stays_whole():
    rng = np.random.default_rng(3)
    acts = torch.tensor(
        rng.normal(0, 1, size=(300, 10)), dtype=torch.float32
    )  # one blob: no structure
    clusterings = detection.cluster_activations(
        acts,
        torch.zeros(300, dtype=torch.long),
        k="silhouette",
        n_components=5,
        reduction="pca",
        min_silhouette=0.5,
    )
    assert clusterings[0].k == 1
    assert detection.candidate_clusters(clusterings) == []


@pytest.mark.parametrize(
    "predictions, flagged, source",
    [
        ([0] * 60 + [7] * 40, False, 7),  # l/p = 1.5 > 1: legitimate
        ([0] * 40 + [7] * 60, True, 7),  # l/p = 0.67: poisoned, source 7
        (
            [0] * 30 + [7] * 30 + [3] * 40,
            True,
            3,
        ),  # l/p = 0.75 against the largest other class
        ([0] * 50 + [7] * 50, True, 7),  # l/p = 1 is not > T = 1
        ([0] * 100, False, 1),  # p = 0: legitimate
    ],
)
def test_reclassification_verdict_is_the_papers_l_over_p_rule(
    predictions, flagged, source
):
    verdict = detection.reclassification_verdict(
        np.array(predictions), label=0, ratio_threshold=1.0
    )
    assert verdict["flagged"] is flagged
    if flagged:
        assert verdict["source_class"] == source
