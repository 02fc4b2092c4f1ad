"""Judging the attack x defense matrix: only runs where the attack implanted a backdoor
count."""

import numpy as np
import pandas as pd
import pytest

from backdoor_utils.orchestration.matrix import attack_runs, judge_matrix, meets_need

# (attack, seed, ASR before, {defense: value}); SIG never works, noise works at seed 0
# only
RUNS = [
    (
        "patch",
        0,
        0.999,
        {"strip": 0.001, "fine_pruning": 0.99, "activation_clustering": 0.99},
    ),
    (
        "patch",
        1,
        0.998,
        {"strip": 0.003, "fine_pruning": 0.98, "activation_clustering": 0.0},
    ),
    (
        "noise",
        0,
        0.996,
        {"strip": 0.014, "fine_pruning": 0.57, "activation_clustering": 0.97},
    ),
    (
        "noise",
        1,
        0.062,
        {"strip": 0.997, "fine_pruning": 0.01, "activation_clustering": 0.0},
    ),
    (
        "sig",
        0,
        0.001,
        {"strip": 0.99, "fine_pruning": 0.001, "activation_clustering": 0.0},
    ),
    (
        "sig",
        1,
        0.001,
        {"strip": 0.99, "fine_pruning": 0.001, "activation_clustering": 0.0},
    ),
]


def _matrix():
    rows = [
        {
            "attack": a,
            "seed": s,
            "defense": d,
            "value": v,
            "clean_acc": 0.99,
            "asr": asr,
        }
        for a, s, asr, cells in RUNS
        for d, v in cells.items()
    ]
    return pd.DataFrame(rows)


def test_a_run_implants_a_backdoor_when_its_asr_reaches_the_floor():
    runs = attack_runs(_matrix(), min_asr=0.5)
    assert len(runs) == 6
    assert runs.set_index(["attack", "seed"]).implanted.to_dict() == {
        ("patch", 0): True,
        ("patch", 1): True,
        ("noise", 0): True,
        ("noise", 1): False,
        ("sig", 0): False,
        ("sig", 1): False,
    }
    with pytest.raises(ValueError, match="min_asr"):
        attack_runs(_matrix(), min_asr=0.0)


def test_cells_are_judged_over_the_seeds_where_the_attack_worked_only():
    verdict = judge_matrix(_matrix(), min_asr=0.5)
    # noise: the seed where it failed would make fine-pruning look half-successful
    # (0.29)
    assert verdict.mean.loc["noise", "fine_pruning"] == pytest.approx(0.57)
    assert verdict.spread.loc["noise", "fine_pruning"] == 0.0  # one seed
    assert verdict.mean.loc["patch", "activation_clustering"] == pytest.approx(0.495)
    assert verdict.n_seeds.to_dict() == {"patch": 2, "noise": 1, "sig": 0}
    # SIG implanted nothing: no cell of its row is judged, it is neither stopped nor
    # unstopped
    assert (
        verdict.mean.loc["sig"].isna().all() and verdict.meets.loc["sig"].isna().all()
    )
    assert verdict.not_implanted == ["sig"]
    assert (
        verdict.n_cells == 6 and verdict.n_cells_ok == 3
    )  # STRIP on patch and noise, AC on noise
    assert verdict.stopped == ["patch", "noise"] and verdict.unstopped == []
    assert verdict.best_defense() == ("strip", 2)
    assert not any(cell.startswith("sig") for cell in verdict.failing)
    assert "noise vs fine-pruning (ASR after 0.57)" in verdict.failing
    texts = verdict.cell_texts(blank="no backdoor")
    assert (
        texts.loc["patch", "strip"] == "0.00 ±\u00a00.00"
    )  # 0.001 and 0.003; "±" stays with the spread
    assert texts.loc["noise", "strip"] == "0.01"  # one seed judged: no spread to show
    assert texts.loc["sig", "strip"] == "no backdoor"


def test_the_direction_of_each_metric_decides_what_meets_the_need():
    assert meets_need("strip", 0.05) and not meets_need(
        "strip", 0.06
    )  # FAR: lower is better
    assert meets_need("activation_clustering", 0.9) and not meets_need(
        "activation_clustering", 0.89
    )
    assert meets_need("neural_cleanse", 0.01) and not meets_need("neural_cleanse", 0.5)


def test_an_attack_that_works_nowhere_leaves_an_empty_verdict_not_an_error():
    matrix = _matrix()
    verdict = judge_matrix(matrix[matrix.attack == "sig"], min_asr=0.5)
    assert verdict.n_cells == 0 and verdict.not_implanted == ["sig"]
    assert np.isnan(verdict.mean.values).all()
