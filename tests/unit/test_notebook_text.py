"""The sentences chapters build from measured numbers (backdoor_utils.notebooks)."""

import math

from backdoor_utils.notebooks import ca_change, learning_pays


def test_a_clean_accuracy_above_the_reference_is_not_called_a_drop():
    # chapter 01 once printed "a drop of -0.02 percentage points"
    assert ca_change(-0.02) == "0.02 percentage points above the clean model"
    assert ca_change(0.03) == "0.03 percentage points below the clean model"
    assert ca_change(0.004) == "the same as the clean model's to 0.01 percentage points"
    assert ca_change(-0.004) == ca_change(0.0)
    assert ca_change(0.26, "the poisoned model") == "0.26 percentage points below the poisoned model"
    assert ca_change(math.nan) == "not compared with the clean model"


def test_the_learned_patch_verdict_follows_the_largest_gain():
    # chapter 04 once printed "its ASR is at most -0.0003 above the fixed patch's"
    assert learning_pays("With s = 1", [-0.0009, -0.0003], 0.0192) == (
        "With s = 1, learning the patch brings no measurable gain: its ASR is within 0.0009 of the fixed "
        "patch's at every rate (the book counts 0.05 as a gain), and training moved its pixels by at most 0.019.")
    assert learning_pays("With s = 100", [0.2126, 0.04], 0.598).startswith(
        "With s = 100, learning the patch pays: its ASR is up to 0.2126 above")
    assert "no measurable gain" in learning_pays("x", [0.0499], 0.1)
    assert "pays" in learning_pays("x", [0.05], 0.1)
    assert learning_pays("x", [math.nan], 0.1) == "x, the learned and the fixed patch were not compared."
