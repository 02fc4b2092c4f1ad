"""Anti-Backdoor Learning (defenses.abl): the LGA loss, the isolation of the lowest-loss
images, and unlearning by gradient ascent."""

import pytest
import torch

from backdoor_utils import attacks, defenses
from backdoor_utils.attacks.patch import corner_patch
from backdoor_utils.core.models import SimpleCNN
from backdoor_utils.core.training import TrainConfig
from backdoor_utils.defenses.abl import ABL, lga_loss, lowest_loss, per_image_loss


def test_lga_descends_above_gamma_and_ascends_below_it():
    for value, slope in [(0.9, 1.0), (0.2, -1.0)]:
        loss = torch.tensor(value, requires_grad=True)
        lga_loss(loss, 0.5).backward()
        assert float(loss.grad) == slope


def test_isolation_takes_the_authors_count_of_lowest_losses():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.05, 2.0, 0.3, 0.7, 1.1, 0.2, 0.4])
    flags = lowest_loss(losses, 0.25)  # int(10 * 0.25) = 2 images
    assert flags.tolist() == [i in (1, 3) for i in range(10)]


@pytest.fixture(scope="module")
def poisoned(splits):
    """A 3x3 patch backdoor on 10% of 2,000 training images, target 0."""
    trigger = corner_patch(3)
    return (
        attacks.dirty_label(
            splits.x_train,
            splits.y_train,
            trigger,
            target_label=0,
            poison_rate=0.1,
            seed=0,
        ),
        trigger,
    )


def test_lga_training_isolates_the_poisons_first(poisoned):
    data, _ = poisoned
    abl = ABL(isolation_ratio=0.05)
    _, isolated = abl.isolate(data.x, data.y, seed=0, device="cpu")
    assert int(isolated.sum()) == 100
    precision = float(data.is_poison[isolated].float().mean())
    assert precision >= 0.9  # the poisons are learned first: lowest loss


def test_unlearning_ascends_the_loss_of_the_isolated_images(poisoned, splits):
    data, _ = poisoned
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SimpleCNN()
    x, y = data.x[data.is_poison][:64], data.y[data.is_poison][:64]
    before = float(per_image_loss(model, x, y).mean())
    after = ABL(unlearn_lr=0.01, unlearn_epochs=2).unlearn(model, x, y, seed=0)
    assert float(per_image_loss(after, x, y).mean()) > before + 0.1


def test_abl_end_to_end_isolates_fine_tunes_and_unlearns(poisoned, splits):
    # whether it removes the backdoor is the matrix's finding, not a unit test's: here,
    # that the stages run in order on the training set as given and keep a working model
    from backdoor_utils.core.metrics import clean_accuracy

    data, _ = poisoned
    abl = defenses.get("abl", isolation_ratio=0.05, finetune_epochs=2, unlearn_epochs=2)
    repaired = abl.train_defended(data.x, data.y, TrainConfig(epochs=2), "cpu")
    isolated = repaired.details["isolated"]
    assert int(isolated.sum()) == 100
    assert float(data.is_poison[isolated].float().mean()) >= 0.9
    assert clean_accuracy(repaired.model, splits.x_test, splits.y_test) > 0.8
