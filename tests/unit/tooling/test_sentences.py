"""The sentences chapters build from measured numbers (tooling.sentences)."""

import io
import math

import pandas as pd
import torch

from backdoor_utils.core import training
from backdoor_utils.tooling.sentences import (
    adaptive_verdict,
    ca_change,
    computed_with,
    confusion_stages_sentence,
    learning_pays,
)


def test_a_clean_accuracy_above_the_reference_is_not_called_a_drop():
    # chapter 01 once printed "a drop of -0.02 percentage points"
    assert ca_change(-0.02) == "0.02 percentage points above the clean model"
    assert ca_change(0.03) == "0.03 percentage points below the clean model"
    assert ca_change(0.004) == "the same as the clean model's to 0.01 percentage points"
    assert ca_change(-0.004) == ca_change(0.0)
    assert (
        ca_change(0.26, "the poisoned model")
        == "0.26 percentage points below the poisoned model"
    )
    assert ca_change(math.nan) == "not compared with the clean model"


def test_the_learned_patch_verdict_follows_the_largest_gain():
    # chapter 04 once printed "its ASR is at most -0.0003 above the fixed patch's"
    assert (
        learning_pays("With s = 1", [-0.0009, -0.0003], 0.0192)
        == "With s = 1, learning the patch brings no measurable gain where poison is"
        " scarce: its ASR is within 0.0009 of the fixed patch's at every rate"
        " compared (the book counts 0.05 as a gain), and training moved its pixels"
        " there by at most 0.019."
    )
    assert (
        learning_pays("With s = 100", [0.2126, 0.04], 0.598)
        == "With s = 100, learning the patch pays where poison is scarce: its ASR is up"
        " to 0.2126 above the fixed patch's (training moved its pixels there by up"
        " to 0.598)."
    )
    assert "no measurable gain" in learning_pays("x", [0.0499], 0.1)
    assert "pays" in learning_pays("x", [0.05], 0.1)
    assert (
        learning_pays("x", [math.nan], 0.1)
        == "x, the learned and the fixed patch were not compared."
    )


def test_adaptive_verdict_names_a_defeat_and_a_defense_the_attack_made_stronger():
    ac, ss = "activation clustering's F1", "Spectral Signatures' recall"
    measured = adaptive_verdict({ac: (0.996, 0.903), ss: (0.053, 0.695)})
    assert (
        measured
        == "On this model the adaptive attack does not defeat either latent-separation"
        " defense by a wide margin (no drop of 0.2 in either detection score). It"
        " even raises Spectral Signatures' recall by 0.642: against that defense it"
        " makes the poisons easier to find, not harder."
    )
    beaten = adaptive_verdict({ac: (0.99, 0.40), ss: (0.50, 0.45)})
    assert (
        beaten == "The adaptive attack defeats a latent-separation defense: it lowers"
        " activation clustering's F1 by 0.590 (the book counts a drop of 0.2 or more"
        " as a defeat)."
    )
    assert adaptive_verdict({ac: (0.9, 0.8)}).startswith(
        "On this model the adaptive attack does not defeat"
    )
    assert "raises" not in adaptive_verdict(
        {ac: (0.5, 0.69)}
    )  # a rise below the threshold is not named
    assert (
        adaptive_verdict({ac: (0.9, float("nan"))})
        == "The adaptive attack was not compared with the plain one."
    )


def _computed_with(monkeypatch, bf16_env=None, native=False):
    """``computed_with("cpu")`` and the precision cache keys record
    (``training_precision``), with BACKDOOR_BF16 set to ``bf16_env`` (or unset) on a CPU
    that does (``native``) or does not compute bf16."""
    if bf16_env is None:
        monkeypatch.delenv("BACKDOOR_BF16", raising=False)
    else:
        monkeypatch.setenv("BACKDOOR_BF16", bf16_env)
    real_open = open

    def fake_open(
        path, *args, **kwargs
    ):  # the CPU's flags, as /proc/cpuinfo would list them
        if path == "/proc/cpuinfo":
            flags = "avx2 avx512f avx512_bf16" if native else "avx2"
            return io.StringIO(
                f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n"
            )
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    training.bf16_native.cache_clear()
    try:
        return computed_with("cpu"), training.training_precision("cpu")
    finally:
        training.bf16_native.cache_clear()


def test_a_chapter_says_where_it_ran_and_in_the_precision_its_models_are_keyed_on(
    monkeypatch,
):
    text, precision = _computed_with(monkeypatch)
    assert (
        precision == "fp32"
        and "models trained in fp32 (this hardware has no native bf16)" in text
    )
    assert text.startswith("the CPU Test CPU 9000 (")
    threads = torch.get_num_threads()
    try:
        for count, said in ((1, "(1 torch thread)"), (2, "(2 torch threads)")):
            torch.set_num_threads(count)
            assert (
                f"{said} with PyTorch {torch.__version__}, models"
                in _computed_with(monkeypatch)[0]
            )
    finally:
        torch.set_num_threads(threads)
    text, precision = _computed_with(monkeypatch, native=True)
    assert (
        precision == "bf16"
        and "models trained under bf16 autocast (this hardware computes bf16 natively)"
        in text
    )
    for env, expected in (
        ("0", "fp32"),
        ("1", "bf16"),
    ):  # the override wins over the hardware, in both
        text, precision = _computed_with(monkeypatch, bf16_env=env, native=env == "0")
        assert precision == expected
        assert (
            "under bf16 autocast" if expected == "bf16" else "in fp32"
        ) + " (as BACKDOOR_BF16 sets)" in text


def test_spectral_choice_names_what_decides_and_whether_the_reference_meets_the_target():
    from backdoor_utils.tooling.sentences import spectral_choice

    recall = {
        ("conv", "reference"): 0.05,
        ("conv", "centred_squared"): 0.10,
        ("penultimate", "reference"): 0.80,
        ("penultimate", "centred_squared"): 0.25,
    }
    text = spectral_choice(recall)
    assert "catches 0.050 of the poisons, the book's first one" in text
    assert "The scoring alone moves recall by +0.550" in text
    assert "the layer by -0.750" in text and "the layer decides more" in text
    assert "misses the target" in text
    assert "(penultimate layer, reference scoring) catches 0.800" in text
    recall[("conv", "reference")] = 0.95
    text = spectral_choice(recall)
    assert "the scoring decides more" in text and "meets the target" in text


def test_price_sentence_names_a_repair_whose_price_exceeds_the_need():
    from backdoor_utils.tooling.sentences import price_sentence

    outcomes = {
        "runs": 19,
        "metric_met": 11,
        "price_met": 2,
        "both_met": 0,
        "cost_min": 0.56,
        "cost_max": 3.9,
    }
    text = price_sentence("I-BAU", "ASR after <= 0.05", outcomes, 1.0)
    assert text.startswith("I-BAU meets its metric (ASR after <= 0.05) at 11 of the 19")
    assert "exceeds the 1 point the need allows at 17 of them" in text
    assert "meets the whole need at 0" in text
    outcomes.update(price_met=19, both_met=11)
    text = price_sentence("I-BAU", "ASR after <= 0.05", outcomes, 1.0)
    assert "costs at most 1 point at every one (0.56 to 3.90" in text
    assert "judged at no run" in price_sentence("ABL", "x", {"runs": 0}, 1.0)


def _isolation(precision, asr_after):
    return pd.DataFrame({"isolation precision": precision, "ASR after": asr_after})


def test_isolation_sentence_compares_abl_with_a_random_choice_and_the_papers_rate():
    from backdoor_utils.tooling.sentences import isolation_sentence

    book = _isolation([0.0, 0.0, 0.004], [1.0, 1.0, 0.99])
    paper = _isolation([0.9, 0.95, 0.8], [0.01, 0.02, 0.3])
    text = isolation_sentence(book, paper, 0.01, 0.1)
    assert "3 runs ABL's isolation sets apart poisons with precision 0.001 on" in text
    assert "(exactly 0 at 2 of them)" in text
    assert "below the 0.01 a random choice" in text
    assert "its precision is 0.900, 0.950, 0.800 at the 3 runs" in text
    assert "at most 0.05 at 2 of them" in text
    assert "premise depends on how many poisons" in text
    assert "Where it did isolate them" not in text  # the backdoor went at 2 of 3
    text = isolation_sentence(book, _isolation([0.9, 0.1, 0.0], [0] * 3), 0.01, 0.1)
    assert "fits first at 1 of the 3 runs only." in text
    assert "Where it did isolate them" not in text
    paper = _isolation([1.0, 0.124, 0.963], [1.0, 1.0, 0.99])
    text = isolation_sentence(book, paper, 0.01, 0.1)
    assert "at 2 of the 3 runs only. Where it did isolate them, unlearning them" in text
    assert "left ASR 1.00, 0.99: on this model, isolating the poisons" in text
    text = isolation_sentence(book, _isolation([0.0] * 3, [1] * 3), 0.01, 0.1)
    assert text.endswith("its premise does not hold there either.")
    text = isolation_sentence(_isolation([0.5], [0.0]), paper[:2], 0.01, 0.1)
    assert "random choice" not in text and "depends on how many" not in text


def _ct_runs(fitted, target_cleansed, genuine, attack="blended"):
    """Confusion Training summaries: 100 poisons of 10,000 images at each run, the last
    distilled set 500 images holding 80 of them."""
    return pd.DataFrame(
        {
            "attack": attack,
            "images": 10000,
            "target's images": 1000,
            "poisons": 100,
            "distilled": 500,
            "poisons distilled": 80,
            "poisons isolated": fitted,
            "target cleansed": target_cleansed,
            "genuine labels cleansed": genuine,
        }
    )


def test_confusion_stages_sentence_names_the_stage_that_failed():
    # the confused model fits the poisons, the final test errs: it is named
    text = confusion_stages_sentence(_ct_runs([95, 90], [False, True], ["", "2, 7"]))
    assert "distilled set (500 images) kept 80% of the poisons (16 times" in text
    assert "fits 90% to 95% of them" in text
    assert "cleansed the target at 1 of the 2 runs and genuine labels at 1" in text
    assert "it is the final test, not the confusion, that fails" in text
    assert text.startswith("On blended, over 2 runs, the last distilled set")
    assert (
        "at 1 run the target's ratio - a mean over all its images, of which the"
        " poisons are 10.0% - stays below the threshold" in text
    )
    assert "at 1 it also fits groups of genuine digits" in text
    # a final test that only misses the target says nothing of genuine groups
    text = confusion_stages_sentence(_ct_runs([95, 90], [False, False], ["", ""]))
    assert "genuine digits" not in text and "at 2 runs the target's ratio" in text
    # the confusion lost the poisons at one run (the other: the test decides), or at all
    mixed = confusion_stages_sentence(_ct_runs([10, 90, 80], [True, False, True], ""))
    assert "At 1 of the runs the confused model fits fewer than 50%" in mixed
    assert (
        "at the other 2 it fits them, and the final test cleansed the target at 1"
        in (mixed)
    )
    assert "The confusion itself failed" in (
        confusion_stages_sentence(_ct_runs([10, 20], [False, False], ["", ""]))
    )
    assert confusion_stages_sentence(
        _ct_runs([95, 90], [True, True], ["", ""])
    ).endswith("both stages work here.")


def test_confusion_stages_sentence_judges_each_attack_on_its_own_runs():
    runs = pd.concat(
        [
            _ct_runs([95, 90], [False, False], ["1", "2"]),
            _ct_runs([10, 20], [False, False], ["", ""], attack="adaptive_blend"),
        ]
    )
    text = confusion_stages_sentence(runs)
    first, second = text.split(" On adaptive_blend, ")
    assert first.startswith("On blended,") and "not the confusion, that fails" in first
    assert "fits 10% to 20%" in second and "The confusion itself failed" in second
