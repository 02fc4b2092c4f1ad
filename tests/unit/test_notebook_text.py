"""The sentences chapters build from measured numbers (backdoor_utils.notebooks)."""

import math

from backdoor_utils.notebooks import ca_change


def test_a_clean_accuracy_above_the_reference_is_not_called_a_drop():
    # chapter 01 once printed "a drop of -0.02 percentage points"
    assert ca_change(-0.02) == "0.02 percentage points above the clean model"
    assert ca_change(0.03) == "0.03 percentage points below the clean model"
    assert ca_change(0.004) == "the same as the clean model's to 0.01 percentage points"
    assert ca_change(-0.004) == ca_change(0.0)
    assert ca_change(0.26, "the poisoned model") == "0.26 percentage points below the poisoned model"
    assert ca_change(math.nan) == "not compared with the clean model"
