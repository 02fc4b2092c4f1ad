"""Judging the attack x defense matrix: only runs where the attack implanted a backdoor
count."""

import numpy as np
import pandas as pd
import pytest

from backdoor_utils.orchestration.matrix import (
    DETECTOR_CELLS,
    REPAIR_CELLS,
    attack_runs,
    judge_matrix,
    meets_need,
)

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
    assert "noise vs fine-pruning (ASR after 0.57, need met at 0 of 1 seeds)" in (
        verdict.failing
    )
    texts = verdict.cell_texts(blank="no backdoor")
    assert (
        texts.loc["patch", "strip"] == "0.00 ±\u00a00.00"
    )  # 0.001 and 0.003; "±" stays with the spread
    assert texts.loc["noise", "strip"] == "0.01"  # one seed judged: no spread to show
    assert texts.loc["sig", "strip"] == "no backdoor"


def _priced(rows):
    """A matrix of one attack (ASR before 1.0 at every seed) whose repair rows carry
    their CA cost: (seed, defense, value, CA cost in points or None)."""
    return pd.DataFrame(
        [
            {
                "attack": "patch",
                "seed": seed,
                "defense": d,
                "value": v,
                "clean_acc": 0.99,
                "asr": 1.0,
                **({} if cost is None else {"ca_cost_pp": cost, "der": 0.9}),
            }
            for seed, d, v, cost in rows
        ]
    )


def test_a_repair_meets_the_need_only_within_one_point_of_clean_accuracy():
    matrix = _priced(
        [
            (0, "fine_pruning", 0.01, 0.4),
            (1, "fine_pruning", 0.02, 1.0),
            (0, "neural_cleanse", 0.01, 0.5),
            (1, "neural_cleanse", 0.00, 2.5),  # ASR gone, but 2.5 points of CA with it
            (0, "strip", 0.01, None),  # STRIP changes no model: no CA price
            (1, "strip", 0.02, None),
        ]
    )
    verdict = judge_matrix(matrix, min_asr=0.5)
    assert verdict.meets.loc["patch"].to_dict() == {
        "fine_pruning": 1.0,
        "neural_cleanse": 0.0,
        "strip": 1.0,
    }
    assert verdict.n_met.loc["patch"].to_dict() == {
        "fine_pruning": 2,
        "neural_cleanse": 1,
        "strip": 2,
    }
    assert verdict.ca_cost.loc["patch", "neural_cleanse"] == pytest.approx(1.5)
    assert verdict.der.loc["patch", "fine_pruning"] == pytest.approx(0.9)
    assert np.isnan(verdict.der.loc["patch", "strip"])
    assert any(
        cell.startswith(
            "patch vs Neural Cleanse + unlearning (ASR after 0.01, need met"
            " at 1 of 2 seeds)"
        )
        for cell in verdict.failing
    )


def test_a_cell_meets_the_need_only_if_every_judged_seed_does_and_shows_how_many_did():
    matrix = _priced(
        [(0, "strip", 0.0, None), (1, "strip", 0.0, None), (2, "strip", 0.12, None)]
    )
    verdict = judge_matrix(matrix, min_asr=0.5)
    assert verdict.mean.loc["patch", "strip"] == pytest.approx(0.04)  # mean meets...
    assert verdict.meets.loc["patch", "strip"] == 0.0  # ...one seed of three does not
    texts = verdict.cell_texts(counts=" · ")
    assert texts.loc["patch", "strip"] == "0.04 ±\u00a00.07 · 2/3 met"


def test_run_meets_need_reads_the_price_only_where_the_model_changed():
    from backdoor_utils.orchestration.matrix import MAX_CA_COST_PP, run_meets_need

    assert MAX_CA_COST_PP == 1.0
    assert run_meets_need("fine_pruning", 0.01, 1.0)
    assert not run_meets_need("fine_pruning", 0.01, 1.01)
    assert run_meets_need("strip", 0.01)  # no price given
    assert not run_meets_need("spectral_signatures", 0.95, 3.0)


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


def test_matrix_summary_gives_mean_spread_and_a_defender_score_oriented_per_metric():
    import pandas as pd

    from backdoor_utils.orchestration.matrix import matrix_summary

    rows = [
        ("patch", 0, "spectral_signatures", 1.0),
        ("patch", 1, "spectral_signatures", 0.8),
        ("patch", 0, "strip", 0.0),
        ("patch", 1, "strip", 0.2),
        ("sig", 0, "spectral_signatures", 0.1),
        ("sig", 1, "spectral_signatures", 0.3),
        ("sig", 0, "strip", 0.9),
        ("sig", 1, "strip", 0.7),
    ]
    matrix = pd.DataFrame(rows, columns=["attack", "seed", "defense", "value"])
    mean, spread, score = matrix_summary(matrix)
    assert list(mean.index) == ["patch", "sig"] and list(mean.columns) == [
        "spectral_signatures",
        "strip",
    ]
    assert mean.loc["patch", "spectral_signatures"] == pytest.approx(0.9)
    assert spread.loc["sig", "strip"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert score.loc["patch", "strip"] == pytest.approx(
        0.9
    )  # FAR 0.1: lower is better, score 1 - FAR
    assert score.loc["sig", "spectral_signatures"] == pytest.approx(
        0.2
    )  # recall: higher is better


def test_matrix_cells_read_as_mean_and_spread_with_the_plus_minus_kept_beside_the_spread():
    import pandas as pd

    from backdoor_utils.orchestration.matrix import mean_sd_texts

    mean = pd.DataFrame({"strip": [0.0123, 0.5]}, index=["patch", "sig"])
    spread = pd.DataFrame({"strip": [0.0016, 0.25]}, index=["patch", "sig"])
    texts = mean_sd_texts(mean, spread)
    assert (
        texts.loc["patch", "strip"] == "0.01 \u00b1\u00a00.00"
    )  # a narrow column breaks before the "±" only
    assert (
        mean_sd_texts(mean, spread, ".4f").loc["sig", "strip"]
        == "0.5000 \u00b1\u00a00.2500"
    )
    assert list(texts.index) == ["patch", "sig"] and list(texts.columns) == ["strip"]


def test_a_matrix_column_is_named_for_the_reader_with_its_metric_in_figures_and_on_one_line_in_prose():
    from backdoor_utils.orchestration.matrix import display_name, matrix_label

    assert matrix_label("strip") == "STRIP\n(FAR)"
    assert matrix_label("neural_cleanse") == "Neural Cleanse\n+ unlearning\n(ASR after)"
    assert display_name("fine_pruning") == "fine-pruning"
    assert display_name("neural_cleanse") == "Neural Cleanse + unlearning"


def test_the_matrix_runs_every_attack_at_each_seed_with_that_runs_own_target(
    monkeypatch,
):
    from types import SimpleNamespace

    from backdoor_utils.orchestration import matrix as module
    from backdoor_utils.orchestration.experiments import Experiment

    trained, cells = [], []

    def run_attack(exp, device):
        trained.append((exp.attack, exp.seed, exp.target_label))
        return SimpleNamespace(splits=None, clean_acc=0.99, asr=0.9)

    monkeypatch.setattr(module, "run_attack", run_attack)
    monkeypatch.setattr(module, "defender_data", lambda splits, n_tune: None)
    monkeypatch.setattr(
        module,
        "defense_cell_cached",
        lambda *args: cells.append(args) or {"value": 0.5},
    )
    frame = module.defense_matrix(
        {"patch": Experiment("patch")},
        [(0, 0), (1, 3)],
        {"strip": None, "fine_pruning": None},
        priced=False,
    )
    assert trained == [("patch", 0, 0), ("patch", 1, 3)]
    assert list(zip(frame.seed, frame.target)) == [(0, 0), (0, 0), (1, 3), (1, 3)]
    assert all(args[-1] is False for args in cells)  # priced passed on to each cell
    with pytest.raises(ValueError, match="runs"):
        module.defense_matrix({"patch": Experiment("patch")}, [(0, 0), (0, 3)], {})


def test_an_unpriced_detector_cell_trains_no_model(monkeypatch):
    from types import SimpleNamespace

    from backdoor_utils import detectors
    from backdoor_utils.orchestration import defend

    scores = {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    found = SimpleNamespace(flags=None)
    monkeypatch.setattr(defend, "detect_and_score", lambda *a, **k: (found, scores))

    def retrain_without(*args):
        raise AssertionError("an unpriced detection retrains nothing")

    monkeypatch.setattr(defend, "retrain_without", retrain_without)
    detector = detectors.get("spectral_signatures")
    cell = defend.defense_cell(None, detector, None, priced=False)
    assert cell == {"value": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_a_registered_defense_brings_its_own_column_into_the_matrix(monkeypatch):
    """A toy repair declares its column; the matrix, its verdict and its labels find it
    with no other edit."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    from backdoor_utils import defenses
    from backdoor_utils.core.column import Column
    from backdoor_utils.orchestration import defend
    from backdoor_utils.orchestration import matrix as module
    from backdoor_utils.orchestration.experiments import Experiment

    @dataclass(frozen=True)
    class Toy(defenses.Defense):
        name = "toy"
        column = Column("ASR after", False, 0.05, "toy\nrepair", "repair")

        def repair(self, model, defender, seed=0, device="auto"):
            return defenses.Repair("repaired")

    monkeypatch.setitem(defenses.REGISTRY, "toy", Toy)
    monkeypatch.setattr(
        module,
        "run_attack",
        lambda exp, device: SimpleNamespace(
            model="attacked",
            splits=None,
            trigger=None,
            experiment=exp,
            clean_acc=0.99,
            asr=0.98,
            key=f"model-{exp.seed}",
        ),
    )
    monkeypatch.setattr(module, "defender_data", lambda splits, n_tune: None)
    monkeypatch.setattr(
        module,
        "defense_cell_cached",
        lambda result, name, method, defender, *rest: defend.defense_cell(
            result, method, defender
        ),
    )
    monkeypatch.setattr(
        defend, "Measure", lambda *a: lambda model: {"asr": 0.01, "clean_acc": 0.985}
    )
    frame = module.defense_matrix(
        {"patch": Experiment("patch")}, [(0, 0), (1, 3)], {"toy": Toy()}
    )
    assert list(frame.metric) == ["ASR after", "ASR after"]
    verdict = judge_matrix(frame)
    assert verdict.meets.loc["patch", "toy"] == 1.0  # ASR 0.01 for half a point of CA
    assert module.matrix_label("toy") == "toy\nrepair\n(ASR after)"
    assert module.display_name("toy") == "toy repair"
    assert list(module.columns())[-1] == "toy"


def test_columns_are_declared_by_the_methods_in_registry_order():
    from backdoor_utils.orchestration.matrix import column, columns

    assert list(columns()) == [
        "activation_clustering",
        "spectral_signatures",
        "strip",
        "scale_up",
        "confusion_training",
        "fine_pruning",
        "neural_cleanse",
        "ibau",
        "abl",
    ]
    assert column("strip").meets(0.05) and not column("strip").meets(0.06)
    assert column("spectral_signatures").score == "recall"
    with pytest.raises(ValueError, match="defense"):
        column("no_such_defense")


def test_the_matrix_table_names_attacks_and_defenses_for_the_reader_with_every_cell():
    """The table chapter 08 shows and the results page pastes: one row per attack, the
    seeds that implanted, each defense's cell with the seeds that met the need."""
    verdict = judge_matrix(_matrix(), min_asr=0.5)
    table = verdict.table(n_runs=2)
    assert list(table.index) == ["pixel (01)", "noise (02)", "SIG, clean-label (07)"]
    assert list(table.columns) == [
        "seeds with a backdoor",
        "activation clustering (F1)",
        "STRIP (FAR)",
        "fine-pruning (ASR after)",
    ]
    assert list(table["seeds with a backdoor"]) == ["2/2", "1/2", "0/2"]
    assert table.loc["pixel (01)", "STRIP (FAR)"] == "0.00 ±\u00a00.00 · 2/2 met"
    assert table.loc["noise (02)", "activation clustering (F1)"] == "0.97 · 1/1 met"
    assert table.loc["SIG, clean-label (07)", "STRIP (FAR)"] == "-"
    assert table.columns.name == "attack"  # the header above the attacks' names
    split = [verdict.table(2, cells=k) for k in (DETECTOR_CELLS, REPAIR_CELLS)]
    assert [list(t.columns[1:]) for t in split] == [
        ["activation clustering (F1)", "STRIP (FAR)"],
        ["fine-pruning (ASR after)"],
    ]


def test_repair_outcomes_count_each_judged_run_by_its_metric_and_by_its_price():
    from backdoor_utils.orchestration.matrix import repair_outcomes

    matrix = _priced(
        [
            (0, "ibau", 0.01, 1.5),  # backdoor gone, at 1.5 points of CA
            (1, "ibau", 0.03, 0.6),  # gone, and cheap
            (2, "ibau", 0.40, 0.2),  # cheap, backdoor kept
            (0, "strip", 0.0, None),
        ]
    )
    matrix.loc[matrix.seed == 3, "asr"] = 0.0
    outcomes = repair_outcomes(matrix, "ibau", min_asr=0.5)
    assert outcomes == {
        "runs": 3,
        "metric_met": 2,
        "price_met": 2,
        "both_met": 1,
        "cost_min": 0.2,
        "cost_max": 1.5,
    }
    matrix.loc[matrix.seed == 2, "asr"] = 0.1  # that attack run did not implant
    assert repair_outcomes(matrix, "ibau", min_asr=0.5)["runs"] == 2


def test_isolation_rows_give_each_runs_isolation_against_the_true_flags():
    from backdoor_utils.orchestration.matrix import isolation_rows

    matrix = _priced([(0, "abl", 0.99, 0.2), (1, "abl", 0.02, 0.4), (0, "ibau", 0, 1)])
    matrix["target"] = matrix.seed
    matrix["asr_after"] = matrix.value
    matrix["isolated_precision"] = [0.0, 0.9, np.nan]
    matrix["isolated_recall"] = [0.0, 0.8, np.nan]
    rows = isolation_rows(matrix)
    assert list(rows["isolation precision"]) == [0.0, 0.9]
    assert list(rows["ASR after"]) == [0.99, 0.02]
    assert list(rows.columns[:4]) == ["attack", "seed", "target", "ASR before"]


def test_runs_table_shows_every_run_with_its_asr_before_and_the_chosen_kinds():
    from backdoor_utils.orchestration.matrix import runs_table

    table = runs_table(_matrix(), REPAIR_CELLS)
    assert list(table.columns) == ["ASR before", "fine-pruning (ASR after)"]
    assert list(table.index) == [(a, s) for a, s, _, _ in RUNS]  # judged or not
    assert (
        table.loc[("noise", 1), "ASR before"]
        == dict(((a, s), asr) for a, s, asr, _ in RUNS)[("noise", 1)]
    )
    assert len(runs_table(_matrix()).columns) == 4


def test_runs_sharing_a_seed_are_refused_before_any_training(monkeypatch):
    from backdoor_utils.orchestration import matrix
    from backdoor_utils.orchestration.experiments import Experiment

    def run_attack(exp, device):
        raise AssertionError("trained before the runs were checked")

    monkeypatch.setattr(matrix, "run_attack", run_attack)
    with pytest.raises(ValueError, match="runs: each .* needs its own seed"):
        matrix.defense_matrix({"pixel": Experiment("patch")}, [(0, 0), (0, 3)], {})
