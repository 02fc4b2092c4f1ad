"""The models the defenses' tests share: trained once for the folder, on one worker."""

import pytest

from backdoor_utils import attacks
from backdoor_utils.attacks.patch import corner_patch
from backdoor_utils.core.training import TrainConfig, train_model
from tests.conftest import require_xdist_group


@pytest.fixture(scope="package")
def _planted_models(splits):
    trigger = corner_patch(3)
    x, y = splits.x_train, splits.y_train
    poisoned = attacks.dirty_label(
        x, y, trigger, target_label=0, poison_rate=0.1, seed=0
    )
    config = TrainConfig(epochs=4, seed=0)
    return {
        "backdoored": train_model(poisoned.x, poisoned.y, config, "cpu"),
        "clean": train_model(x, y, config, "cpu"),
        "x_clean": splits.x_val[:1000],
        "trigger": trigger,
    }


@pytest.fixture
def planted(request):
    """A small SimpleCNN with a 3x3 patch backdoor (target 0), a clean twin, and clean
    images. A test that reads it is marked ``@uses_planted``."""
    require_xdist_group(request, "test_defenses.planted", "mark it @uses_planted")
    return request.getfixturevalue("_planted_models")
