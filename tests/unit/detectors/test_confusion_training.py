"""Confusion Training (detectors.confusion_training): confused labels, distillation,
the final likelihood-ratio test on the given labels, and the detector end to end."""

import numpy as np
import pytest
import torch

from backdoor_utils import attacks, detectors
from backdoor_utils.attacks.patch import corner_patch
from backdoor_utils.core.training import TrainConfig, train_model
from backdoor_utils.detectors import confusion_training as ct
from backdoor_utils.detectors.confusion_training import (
    ConfusionTraining,
    class_weights,
    confusion_labels,
    distil,
    likelihood_ratio,
)


def test_confused_labels_never_equal_the_prediction_and_cycle_every_shift():
    predicted = torch.arange(10).repeat(3)
    shifts = set()
    for step in range(27):
        confused = confusion_labels(predicted, step)
        assert not (confused == predicted).any()
        shift = (confused - predicted) % 10
        assert len(set(shift.tolist())) == 1  # one offset per batch
        shifts.add(int(shift[0]))
    assert shifts == set(range(1, 10))


def test_class_weights_favour_rare_classes_and_are_uniform_in_the_last_round():
    y = torch.tensor([0] * 8 + [1] * 2)
    w = class_weights(y)
    assert torch.allclose(w[0], 1 / torch.sqrt(torch.tensor(0.8 + 0.001)))
    assert w[9] > w[0]
    assert torch.equal(class_weights(y, uniform=True), torch.ones(10))


def test_distillation_keeps_the_lowest_losses_and_tops_up_every_class():
    y = torch.tensor([0] * 50 + [1] * 50)
    losses = torch.cat([torch.linspace(0, 1, 50), torch.linspace(2, 3, 50)])
    kept = distil(losses, y, ratio=0.1, floor=10)  # 10 lowest: all of class 0
    in_class_1 = kept[y[kept] == 1]
    assert set(range(10)) <= set(kept.tolist())  # class 0's ten lowest
    assert sorted(in_class_1.tolist()) == list(range(50, 55))  # topped up: its lowest 5
    assert len(kept) == 15


def test_two_groups_are_likelier_only_when_the_isolated_images_stand_apart():
    rng = np.random.default_rng(0)
    genuine = rng.normal(0, 1, (200, 2))
    apart = np.r_[genuine, rng.normal(6, 0.3, (20, 2))]
    isolated = np.r_[np.zeros(200, bool), np.ones(20, bool)]
    assert likelihood_ratio(apart, isolated) > 2
    mixed = np.r_[genuine, rng.normal(0, 1, (20, 2))]
    assert likelihood_ratio(mixed, isolated) < 1.5
    assert likelihood_ratio(apart, np.zeros(220, bool)) == 1.0  # no second group


def test_the_final_test_flags_the_isolated_images_of_the_cleansed_label_only(
    monkeypatch,
):
    # label 3 holds 20 isolated images far from its 200 genuine ones; every other
    # label's isolated images lie among its genuine ones
    rng = np.random.default_rng(1)
    y = torch.tensor(np.repeat(np.arange(10), 220))
    features = rng.normal(0, 1, (2200, 8)).astype(np.float32)
    isolated = np.tile(np.r_[np.zeros(200, bool), np.ones(20, bool)], 10)
    features[(y.numpy() == 3) & isolated] += 8.0
    predictions = torch.where(torch.from_numpy(isolated), y, (y + 1) % 10)
    monkeypatch.setattr(ct, "activations", lambda model, x: torch.from_numpy(features))
    monkeypatch.setattr(ct, "predict", lambda model, x: predictions)
    found = ConfusionTraining()._identify(None, None, y, torch.arange(5))
    assert found.cleansed == [3] and found.ratios[3] > 2
    assert torch.equal(found.flags, torch.from_numpy((y.numpy() == 3) & isolated))
    # every label's isolated images are kept for the reader, flagged or not
    assert torch.equal(found.isolated, torch.from_numpy(isolated))


def test_schedules_need_one_value_per_round_and_the_clean_set():
    with pytest.raises(ValueError, match="iterations: must give one value per round"):
        ConfusionTraining(iterations=(10, 10))
    with pytest.raises(ValueError, match="clean"):
        ConfusionTraining().detect(None, torch.zeros(1, 1, 28, 28), torch.zeros(1))


def test_confusion_training_finds_patch_poisons_end_to_end(splits):
    trigger = corner_patch(3)
    poisoned = attacks.dirty_label(
        splits.x_train, splits.y_train, trigger, target_label=0, poison_rate=0.1, seed=0
    )
    model = train_model(poisoned.x, poisoned.y, TrainConfig(epochs=3), "cpu")
    detector = detectors.get(
        "confusion_training",
        n_clean=500,
        pretrain_epochs=(1, 1, 2, 2, 2, 2),
        iterations=(60, 60, 60, 60, 30, 30),
    )
    found = detector.detect(
        model,
        poisoned.x,
        poisoned.y,
        clean=(splits.x_val, splits.y_val),
        device="cpu",
    )
    truth = poisoned.is_poison
    assert 0 in found.cleansed
    recall = float((found.flags & truth).sum() / truth.sum())
    precision = float((found.flags & truth).sum() / found.flags.sum())
    assert recall > 0.8 and precision > 0.5, (recall, precision, found.ratios)
