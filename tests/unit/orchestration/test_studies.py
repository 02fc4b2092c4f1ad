"""Reader-side summaries: where the true poisons ended up, why a detection run missed,
the\nstealth / poison pick, the matrix summary; and the matrix's cached cells."""

import pandas as pd
import numpy as np
import torch

from backdoor_utils.detectors.activation_clustering import (
    ClassClustering,
    Detection,
    Reclassification,
)
from backdoor_utils.detectors.confusion_training import ConfusionResult
from backdoor_utils.orchestration.studies import (
    confusion_labels_table,
    confusion_summary,
    failure_reason,
    where_the_poisons_went,
)
from tests.unit.stand_ins import PixelFeatures


def _run(**overrides):
    run = {
        "f1": 0.0,
        "recall": 0.0,
        "n_flagged": 0,
        "n_poison_total": 540,
        "poisons_in_best_candidate": 0,
        "best_candidate_size": 0,
        "best_candidate_l": 0,
        "best_candidate_p": 0,
        "best_candidate_flagged": False,
        "poison_label_k": 0,
    }
    return {**run, **overrides}


def test_where_the_poisons_went_picks_the_candidate_holding_most_poisons():
    truth = torch.zeros(100, dtype=torch.bool)
    truth[:30] = True
    table = [
        {"size": 20, "l": 15, "p": 3, "flagged": False},
        {"size": 40, "l": 4, "p": 9, "flagged": True},
    ]
    members = [np.arange(50, 70), np.arange(5, 45)]  # 0 poisons, then 25 poisons
    found = Detection(
        [], Reclassification(torch.zeros(100, dtype=torch.bool), table, None, members)
    )
    went = where_the_poisons_went(found, truth)
    assert went["n_poison_total"] == 30 and went["poisons_in_best_candidate"] == 25
    assert (
        went["best_candidate_size"],
        went["best_candidate_l"],
        went["best_candidate_p"],
    ) == (40, 4, 9)
    assert went["best_candidate_flagged"] is True


def test_where_the_poisons_went_describes_how_the_poisons_label_was_split():
    truth = torch.zeros(100, dtype=torch.bool)
    truth[:30] = True  # the poisons all carry label 3, which holds images 0-59
    # cluster ids not in size order: 2 holds 40 images (25 poisons), 0 holds 15 (5), 1
    # holds 5 (0)
    assign = np.r_[
        np.full(25, 2), np.zeros(5), np.zeros(10), np.full(15, 2), np.ones(5)
    ].astype(int)
    three = ClassClustering(3, np.arange(60), np.zeros((60, 2)), assign, 3, 0.2)
    other = ClassClustering(
        4, np.arange(60, 100), np.zeros((40, 2)), np.zeros(40, dtype=int), 1, 0.05
    )
    members = [np.arange(60)[assign == 1]]  # only the 5-image cluster was a candidate
    table = [{"size": 5, "l": 5, "p": 0, "flagged": False}]
    found = Detection(
        [other, three],
        Reclassification(torch.zeros(100, dtype=torch.bool), table, None, members),
    )
    went = where_the_poisons_went(found, truth)
    assert went["poison_label"] == 3 and went["poison_label_k"] == 3
    assert went["poison_label_sizes"] == (40, 15, 5)  # largest first
    assert went["poison_label_held"] == (25, 5, 0)
    assert went["poison_label_candidates"] == (False, False, True)


def test_failure_reason_names_what_went_wrong():
    assert failure_reason(_run(f1=0.95)) == ""
    split = failure_reason(_run(poisons_in_best_candidate=183))
    assert (
        "no candidate cluster holds even half of the 540 poisons (the best holds 183)"
        in split
    )
    halves = failure_reason(
        _run(
            poison_label_k=2,
            poison_label_sizes=(3274, 2809),
            poison_label_held=(415, 125),
            poison_label_candidates=(False, False),
        ),
        size_threshold=0.35,
    )
    assert (
        halves
        == "the silhouette splits the target label into 2 clusters of 3,274 and 2,809"
        " images, holding 415 and 125 of the 540 poisons; neither is a candidate (a"
        " candidate holds at most 0.35 of its label and is not its largest cluster)"
    )
    thirds = failure_reason(
        _run(
            poison_label_k=3,
            poison_label_sizes=(3000, 2000, 900),
            poisons_in_best_candidate=30,
            poison_label_held=(10, 500, 30),
            poison_label_candidates=(False, False, True),
        )
    )
    assert (
        "into 3 clusters of 3,000, 2,000 and 900 images, holding 10, 500 and 30 of"
        " the 540" in thirds
    )
    assert thirds.endswith("hold only 30 of them")
    whole = failure_reason(
        _run(poison_label_k=1, poison_label_silhouette=0.0812), min_silhouette=0.1
    )
    assert (
        "stays one cluster: its best split scores silhouette 0.081, below"
        " min_silhouette 0.1" in whole
    )
    kept = failure_reason(
        _run(
            poisons_in_best_candidate=511,
            best_candidate_size=511,
            best_candidate_l=123,
            best_candidate_p=78,
        )
    )
    assert (
        "511 of the 540 poisons form a cluster of 511" in kept
        and "other 29 poisons" in kept
    )
    assert "l / p = 1.58 > T = 1 keeps the cluster" in kept
    mixed = failure_reason(
        _run(
            poisons_in_best_candidate=357,
            best_candidate_size=2165,
            best_candidate_l=1375,
            best_candidate_p=500,
        )
    )
    assert (
        "357 of the 540 poisons fall in a cluster of 2,165 images that are mostly"
        " genuine digits" in mixed
    )
    assert "the reclassifier calls 1,375 of them the target against 500" in mixed
    assert "l / p = 2.75 > T = 1 keeps the cluster" in mixed
    noisy = failure_reason(_run(n_flagged=838, poisons_in_best_candidate=100))
    assert noisy.endswith("; 838 genuine images are flagged")


def _grid():
    import pandas as pd

    # eps (in 1/255), poison rate -> n_poison, PSNR, CA, ASR
    rows = [
        (4, 0.01, 540, 41.0, 0.99, 0.30),
        (4, 0.05, 2700, 41.0, 0.99, 0.97),
        (8, 0.01, 540, 37.7, 0.99, 0.76),
        (8, 0.02, 1080, 37.7, 0.99, 0.985),
        (8, 0.05, 2700, 37.7, 0.99, 1.0),
        (16, 0.01, 540, 31.0, 0.99, 0.999),
    ]
    return pd.DataFrame(
        [
            {
                "eps": e / 255,
                "poison_rate": r,
                "n_poison": n,
                "psnr_db_median": p,
                "clean_acc": c,
                "asr": a,
            }
            for e, r, n, p, c, a in rows
        ]
    )


def test_cheapest_setting_takes_the_fewest_poisons_among_stealthy_working_cells():
    from backdoor_utils.orchestration.studies import cheapest_setting

    pick = cheapest_setting(
        _grid(), "eps", min_psnr_db=35.0, min_asr=0.98, scale=255, unit="/255"
    )
    # 16/255 works with 540 poisons but is visible (31 dB): not eligible
    assert pick.row["n_poison"] == 1080 and round(pick.row["eps"] * 255) == 8
    assert pick.text.startswith(
        "eps 8/255 (median PSNR 37.7 dB) at poison rate 0.02 (1,080 poisoned images)"
    )
    assert pick.compare(8 / 255, 0.02) == "It is this chapter's default setting."
    assert "is not that setting" in pick.compare(8 / 255, 0.01)


def test_cheapest_setting_says_none_and_names_the_closest_when_no_cell_meets_both_floors():
    from backdoor_utils.orchestration.studies import cheapest_setting

    pick = cheapest_setting(
        _grid(), "eps", min_psnr_db=38.0, min_asr=0.98, scale=255, unit="/255"
    )
    assert (
        pick.row is None
    )  # only 4/255 is stealthy enough, and it reaches 0.97 at best
    assert (
        pick.text.startswith("none in the grid: the closest is eps 4/255")
        and "ASR 0.9700" in pick.text
    )
    assert pick.compare(8 / 255, 0.01).startswith(
        "No setting of the grid meets both floors"
    )


def test_learned_vs_fixed_puts_each_step_size_beside_the_frozen_patch(monkeypatch):
    import pandas as pd
    from types import SimpleNamespace

    from backdoor_utils.orchestration import studies
    from backdoor_utils.attacks.patch import PatchTrigger
    from backdoor_utils.orchestration.experiments import Experiment

    start = Experiment("learned").trigger().frozen()
    asr = {
        ("initial_patch", 1.0): [0.30, 0.70],
        ("learned", 1.0): [0.31, 0.69],
        ("learned", 100.0): [0.60, 0.90],
    }

    def sweep(
        exp, field, values, device
    ):  # no training: ASRs as given, pixels moved by 0.001 x the step size
        key = (
            exp.attack,
            exp.method.trigger_lr_scale if exp.attack == "learned" else 1.0,
        )
        moved = PatchTrigger(
            start.size,
            start.row,
            start.col,
            pattern=tuple(min(1.0, p + 0.001 * key[1]) for p in start.pattern),
        )
        runs = [SimpleNamespace(trigger=moved) for _ in values]
        return runs, pd.DataFrame(
            {field: values, "n_poison": [11, 27], "asr": asr[key]}
        )

    monkeypatch.setattr(studies, "sweep", sweep)
    runs, tables, fixed = studies.learned_vs_fixed(
        Experiment("learned"), [1, 100], [0.0002, 0.0005], "cpu"
    )
    assert list(tables) == [1, 100] and list(fixed.asr) == [0.30, 0.70]
    assert list(tables[100]["ASR fixed initial"]) == [0.30, 0.70]
    assert np.allclose(tables[100].gain, [0.30, 0.20]) and np.allclose(
        tables[1].gain, [0.01, -0.01]
    )
    assert (
        tables[100]["largest change of a patch pixel"].max()
        > tables[1]["largest change of a patch pixel"].max()
    )
    assert (tables[100].trigger_lr_scale == 100).all() and len(runs[1]) == 2


def _signature_in_conv_features(n_clean=900, n_poison=90):
    """A poisoned training set of one label (the target, 0) whose poisons are shifted
    along one non-negative direction of the conv features only."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_clean + n_poison, 1, 28, 28, generator=g)
    direction = torch.randn(32, generator=g).abs()
    x.view(len(x), -1)[n_clean:, 32:64] += 3.2 * direction / direction.norm()
    truth = torch.arange(len(x)) >= n_clean
    y = torch.zeros(len(x), dtype=torch.long)
    return SimpleNamespace(
        poisoned=SimpleNamespace(x=x, y=y, is_poison=truth),
        experiment=SimpleNamespace(target_label=0),
        model=PixelFeatures(),
        key="stand-in",  # the model's cache key: the studies' tables are keyed on it
    )


def test_spectral_variants_score_every_layer_and_scoring_against_the_true_flags(
    tmp_path, monkeypatch
):
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration.studies import spectral_variants

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    table = spectral_variants(_signature_in_conv_features(), epsilon=0.1)
    # computed once: a second execution loads the same table from its one entry
    again = spectral_variants(_signature_in_conv_features(), epsilon=0.1)
    assert len(list((tmp_path / "studies").glob("*.pt"))) == 1
    pd.testing.assert_frame_equal(table, again)
    assert list(zip(table.layer, table.scoring)) == [
        (layer, scoring)
        for layer in ("conv", "penultimate", "last_conv")
        for scoring in ("reference", "centred_squared")
    ]
    assert list(table.dimensions) == [32, 32, 32, 32, 64, 64]
    found = table.set_index(["layer", "scoring"])["recall of the removal"]
    assert (
        found["conv", "reference"] >= 0.95 and found["conv", "centred_squared"] >= 0.95
    )
    assert found["penultimate", "reference"] < 0.5  # no signature there
    auroc = table.set_index(["layer", "scoring"])["AUROC poisoned vs genuine"]
    assert (
        auroc["conv", "reference"] > 0.95
        and abs(auroc["penultimate", "reference"] - 0.5) < 0.15
    )


def test_singular_directions_use_the_detectors_layer_and_scoring(tmp_path, monkeypatch):
    from backdoor_utils import detectors
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration.studies import singular_directions

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    run = _signature_in_conv_features()
    at_conv = singular_directions(run, detectors.get("spectral_signatures"), 3)
    assert list(at_conv.direction) == [1, 2, 3]
    assert at_conv["recall of the removal"][0] >= 0.95
    elsewhere = detectors.get("spectral_signatures", layer="penultimate")
    assert singular_directions(run, elsewhere, 3)["recall of the removal"][0] < 0.5


def test_a_map_over_seeds_keeps_what_holds_at_every_seed_and_its_choice_follows():
    from backdoor_utils.orchestration.studies import cheapest_setting, worst_over_seeds

    # eps 8/255 at 1% implants at seed 0 only; 8/255 at 2% at every seed
    per_seed = pd.DataFrame(
        [
            {
                "eps": e / 255,
                "poison_rate": r,
                "seed": s,
                "n_poison": n,
                "psnr_db_median": p,
                "clean_acc": 0.99,
                "asr": a,
            }
            for e, r, n, p, asrs in [
                (8, 0.01, 540, 37.7, [0.995, 0.51, 0.11]),
                (8, 0.02, 1080, 37.7, [0.99, 0.985, 0.981]),
            ]
            for s, a in enumerate(asrs)
        ]
    )
    worst = worst_over_seeds(per_seed, "eps")
    assert list(worst.asr) == [0.11, 0.981] and list(worst.n_seeds) == [3, 3]
    assert worst.asr_by_seed[0] == "0.99, 0.51, 0.11"  # each seed's ASR, shown
    pick = cheapest_setting(worst, "eps", 35.0, 0.98, scale=255, unit="/255")
    assert pick.row["n_poison"] == 1080  # not the 540 that worked at seed 0 alone
    one_seed = cheapest_setting(per_seed[per_seed.seed == 0], "eps", 35.0, 0.98)
    assert one_seed.row["n_poison"] == 540  # what a map of one seed would have chosen


def test_sig_setting_is_the_cheapest_that_implants_at_every_run():
    from backdoor_utils.orchestration.studies import (
        cheapest_signal,
        signal_map_over_runs,
    )

    def grid(cells):
        return pd.DataFrame(
            [
                {
                    "sig_delta": d / 255,
                    "share": share,
                    "test_delta": t / 255,
                    "seed": run,
                    "target": 3 * run,
                    "n_poison": n + run,
                    "psnr_db_median": 30.0,
                    "clean_acc": 0.99,
                    "asr": a,
                    "clean_model": 0.01 * run,
                }
                for d, share, t, n, asrs in cells
                for run, a in enumerate(asrs)
            ]
        )

    cells = [
        (20, 0.1, 20, 590, [0.95, 0.2, 0.1]),  # implants at one run only
        (20, 0.1, 40, 590, [0.99, 0.6, 0.3]),
        (30, 0.1, 30, 590, [0.2, 0.1, 0.1]),
        (30, 0.1, 60, 590, [0.99, 0.97, 0.93]),  # every run, stronger test signal
        (20, 0.2, 20, 1180, [0.99, 0.98, 0.97]),  # every run, but twice the poisons
    ]
    summary = signal_map_over_runs(grid(cells))
    assert list(summary.asr) == [0.1, 0.3, 0.1, 0.93, 0.97]
    assert list(summary.n_runs) == [3] * 5 and list(summary.n_poison)[0] == 592
    assert summary.asr_by_run[0] == "0.95, 0.20, 0.10"
    assert summary.clean_model.max() == 0.02
    pick = cheapest_signal(summary, 0.9)
    assert pick.implants and pick.params == {
        "sig_delta": 30 / 255,
        "sig_test_delta": 60 / 255,
        "poison_rate": 0.1,
    }
    assert "training signal 30/255 on 10%" in pick.text
    assert "tested with 60/255" in pick.text
    weaker = cheapest_signal(summary, 0.95)  # only the 20% share holds at 0.95
    assert (
        weaker.params["poison_rate"] == 0.2 and weaker.params["sig_test_delta"] is None
    )
    none = cheapest_signal(summary, 0.99)
    assert not none.implants and none.row["asr"] == 0.97
    assert none.text.startswith("none implants at every run (ASR >= 0.99)")


def test_budget_study_scores_each_budget_on_backdoored_and_clean_models(monkeypatch):
    from types import SimpleNamespace

    from backdoor_utils import defenses
    from backdoor_utils.defenses.neural_cleanse import ReversedTrigger
    from backdoor_utils.orchestration import studies
    from backdoor_utils.orchestration.experiments import Experiment

    spread = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 11.0, 9.0, 10.0, 10.2]

    def run_attack(exp, device):
        return SimpleNamespace(experiment=exp)

    def reversed_triggers(result, x, with_seconds, **options):
        exp = result.experiment
        l1 = list(spread)
        if exp.attack != "none" and options["steps"] > 50:  # the larger budget finds it
            l1[exp.target_label] = 2.0
        if exp.attack == "none" and exp.seed == 1:  # an outlier at the run's target
            l1[3] = 1.0
        triggers = [
            ReversedTrigger(c, None, None, v, 1.0, True, options["steps"])
            for c, v in enumerate(l1)
        ]
        return triggers, float(options["steps"])

    monkeypatch.setattr(studies, "run_attack", run_attack)
    monkeypatch.setattr(studies, "reversed_triggers", reversed_triggers)
    budgets = {
        "small": defenses.get("neural_cleanse", steps=30),
        "large": defenses.get("neural_cleanse", steps=1000, cost_multiplier=2.0),
    }
    table = studies.cleanse_budgets(
        Experiment("patch"), [[0, 0], [1, 3]], None, budgets, "cpu"
    )
    assert len(table) == 8 and list(table.model[:2]) == ["backdoored", "clean"]
    large = table[table.budget == "large"].set_index(["seed", "model"])
    assert large.loc[(1, "backdoored"), "target_flagged"]
    assert large.loc[(1, "backdoored"), "target_index"] > 2  # label 3, not label 0
    assert np.isnan(large.loc[(1, "clean"), "target_index"])
    assert large.loc[(1, "clean"), "false_flags"] == 1  # every class of a clean model
    assert large.loc[(1, "clean"), "flagged"] == "3"
    assert large.loc[(0, "backdoored"), "false_flags"] == 0
    assert large.loc[(0, "backdoored"), "steps_run"] == 1000
    verdicts = studies.budget_verdicts(table).set_index("budget")
    assert verdicts.loc["large", "target flagged"] == "2 of 2"
    assert verdicts.loc["small", "target flagged"] == "0 of 2"
    assert verdicts.loc["large", "false flags"] == 1
    assert (
        verdicts.loc["large", "verdicts"] == "seed 0: target; seed 1: target +1 false"
    )
    assert (
        verdicts.loc["small", "verdicts"] == "seed 0: missed; seed 1: missed +1 false"
    )
    assert verdicts.loc["large", "seconds a model"] == 1000.0


def test_cleanse_over_runs_reads_each_run_at_its_own_target(monkeypatch):
    from types import SimpleNamespace

    from backdoor_utils.defenses.neural_cleanse import CleanseReport, ReversedTrigger
    from backdoor_utils.orchestration import studies
    from backdoor_utils.orchestration.experiments import Experiment

    def run_attack(exp, device):
        return SimpleNamespace(experiment=exp, asr=0.9 + exp.seed / 100)

    def cleanse(result, defense, x_clean):
        target = result.experiment.target_label
        index = np.linspace(0.1, 1.0, 10)
        index[target] = 3.0 + result.experiment.seed
        index[9 - target] = np.nan  # a class that never reached the target rate
        triggers = [
            ReversedTrigger(c, None, None, 1.0, 0.0, c != 9 - target, 5)
            for c in range(10)
        ]
        return CleanseReport(triggers, index, [target])

    monkeypatch.setattr(studies, "run_attack", run_attack)
    monkeypatch.setattr(studies, "cleanse", cleanse)
    table = studies.cleanse_over_runs(
        Experiment("patch"), [[0, 0], [1, 3]], None, None, "cpu"
    ).set_index("seed")
    assert list(table.target) == [0, 3] and list(table.asr) == [0.9, 0.91]
    assert table.loc[1, "target_index"] == 4.0  # label 3, not label 0
    assert table.loc[1, "flagged"] == "3" and table.loc[1, "target_flagged"]
    assert table.loc[0, "max_other_index"] == 0.9  # label 0 left out, NaN ignored
    assert table.loc[1, "max_other_index"] == 1.0
    assert (table.unreached == 1).all()


def _confusion_run():
    """Labels 0-9, ten images each; the poisons are images 0-3 (label 0, the target).
    The distilled set keeps images 0-2 and 10-14; the confused model fits images 0-2 and
    4-5 (label 0: 3 of the poisons) and 10-17 (label 1); the final test cleanses label 1
    only."""
    y = torch.arange(10).repeat_interleave(10)
    truth = torch.zeros(100, dtype=torch.bool)
    truth[:4] = True
    isolated = torch.zeros(100, dtype=torch.bool)
    isolated[:3] = isolated[4:6] = isolated[10:18] = True
    found = ConfusionResult(
        flags=isolated & (y == 1),
        ratios={0: 1.3, 1: 40.0},
        cleansed=[1],
        distilled=torch.tensor([0, 1, 2, 10, 11, 12, 13, 14]),
        isolated=isolated,
    )
    return confusion_labels_table(found, y, truth)


def test_confusion_table_counts_each_stage_per_label_against_the_true_flags():
    table = _confusion_run().set_index("label")
    assert table.loc[0, ["images", "poisons", "distilled"]].tolist() == [10, 4, 3]
    assert table.loc[0, "poisons distilled"] == 3
    assert table.loc[0, ["isolated", "poisons isolated"]].tolist() == [5, 3]
    assert table.loc[1, ["distilled", "isolated", "poisons isolated"]].tolist() == [
        5,
        8,
        0,
    ]
    assert table.loc[0, "ratio"] == 1.3 and table.loc[5, "ratio"] == 1.0
    assert table["cleansed"].tolist() == [False, True] + [False] * 8


def test_confusion_summary_tells_distillation_from_the_final_test():
    run = _confusion_run().assign(attack="blended", seed=0, target=0)
    row = confusion_summary(run).iloc[0]
    # the distillation kept 3 of the 4 poisons and the confused model fitted 3...
    assert (row["poisons"], row["distilled"], row["poisons distilled"]) == (4, 8, 3)
    assert row["poisons isolated"] == 3 and row["images"] == 100
    assert row["target's images"] == 10
    # ...but the final test cleansed a genuine label, not the target: 8 flags, none a
    # poison
    assert not row["target cleansed"] and row["target's ratio"] == 1.3
    assert row["genuine labels cleansed"] == "1"
    assert row["flagged"] == 8 and row["precision"] == 0.0 and row["f1"] == 0.0
    # with the target cleansed too, its 5 isolated images are flagged: 3 poisons
    both = run.assign(cleansed=run["label"].isin([0, 1]))
    row = confusion_summary(both).iloc[0]
    assert row["target cleansed"] and row["flagged"] == 13
    assert row["precision"] == 3 / 13 and row["recall"] == 3 / 4
    assert np.isclose(row["f1"], 2 * (3 / 13) * (3 / 4) / (3 / 13 + 3 / 4))


def test_confusion_over_runs_runs_each_attack_as_the_matrix_does_and_once(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from backdoor_utils import detectors
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration import matrix, studies
    from backdoor_utils.orchestration.experiments import Experiment

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    y = torch.arange(10).repeat_interleave(10)
    splits = SimpleNamespace(x_val=torch.rand(7000, 1, 28, 28), y_val=y.repeat(70))

    def run_attack(exp, device):
        truth = torch.zeros(100, dtype=torch.bool)
        truth[exp.target_label * 10 : exp.target_label * 10 + 4] = True
        poisoned = SimpleNamespace(x=torch.zeros(100, 1, 28, 28), y=y, is_poison=truth)
        key = f"{exp.attack}-{exp.seed}-{exp.target_label}"
        return SimpleNamespace(
            experiment=exp, splits=splits, poisoned=poisoned, key=key
        )

    calls = []

    def detect_and_score(result, detector, seed, device, defender):
        calls.append((result.key, seed, len(defender.y_tune)))
        target = result.experiment.target_label
        fits = (y == target) | (y == 5)
        found = ConfusionResult(
            fits & (y == 5), {target: 1.2, 5: 9.0}, [5], torch.arange(20), fits
        )
        return found, {}

    monkeypatch.setattr(matrix, "run_attack", run_attack)
    monkeypatch.setattr(studies, "detect_and_score", detect_and_score)
    ct = detectors.get("confusion_training")
    experiments = {"blended": Experiment("blended"), "pixel": Experiment("patch")}
    table = studies.confusion_over_runs(experiments, [(0, 0), (1, 3)], ct, "cpu", 5000)
    # the matrix's seed and clean set for every (attack, run)
    assert calls == [
        ("blended-0-0", 0, 5000),
        ("blended-1-3", 1, 5000),
        ("patch-0-0", 0, 5000),
        ("patch-1-3", 1, 5000),
    ]
    again = studies.confusion_over_runs(experiments, [(0, 0), (1, 3)], ct, "cpu", 5000)
    assert len(calls) == 4  # the second pass loads every run
    pd.testing.assert_frame_equal(table, again)
    runs = studies.confusion_summary(table).set_index(["attack", "seed"])
    assert list(runs.index) == [
        ("blended", 0),
        ("blended", 1),
        ("pixel", 0),
        ("pixel", 1),
    ]
    # each run read at its own target: label 3's poisons at seed 1
    assert runs.loc[("blended", 1), "target's ratio"] == 1.2
    assert runs.loc[("blended", 1), "poisons isolated"] == 4
    assert runs.loc[("blended", 1), "genuine labels cleansed"] == "5"
