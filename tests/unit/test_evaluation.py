"""Reader-side summaries: where the true poisons ended up, why a detection run missed,
the\nstealth / poison pick, the matrix summary; and the matrix's cached cells."""

import numpy as np
import pytest
import torch

from backdoor_utils.detectors.activation_clustering import (
    ClassClustering,
    Detection,
    Reclassification,
)
from backdoor_utils.orchestration.studies import failure_reason, where_the_poisons_went


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


def test_matrix_cells_are_cached_per_attack_defense_parameters_and_seed(
    monkeypatch, tmp_path
):
    from types import SimpleNamespace

    from backdoor_utils.core import cache
    from backdoor_utils import detectors
    from backdoor_utils.orchestration import defend
    from backdoor_utils.orchestration.experiments import Experiment

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    computed = []

    def cell(result, name, method, defender, seed, device, strip_inputs):
        computed.append((name, seed))
        return {"value": 0.25 * len(computed), "frr": 0.01}

    monkeypatch.setattr(defend, "defense_cell", cell)
    result = SimpleNamespace(
        experiment=Experiment("patch", n_train=1000, epochs=1), key="model-a"
    )
    strip = detectors.get("strip", n_overlays=10)
    defender = SimpleNamespace(
        x_select=torch.zeros(4, 1, 28, 28), x_tune=torch.ones(4, 1, 28, 28)
    )

    def run(method=strip, seed=0, experiment=None):
        if experiment is not None:  # another model: another key
            result.experiment, result.key = experiment, "model-b"
        return defend.defense_cell_cached(
            result, "strip", method, defender, 500, seed, "cpu", 100
        )

    first = run()
    assert (
        run() == first == {"value": 0.25, "frr": 0.01} and len(computed) == 1
    )  # from the cache
    run(
        method=detectors.get("strip", n_overlays=20)
    )  # the defense's parameters are in the key
    run(seed=1)  # so is the seed
    run(
        experiment=Experiment("patch", n_train=1000, epochs=1, poison_rate=0.02)
    )  # and the attack
    assert len(computed) == 4
    assert len(list((tmp_path / "matrix_cells").glob("*.pt"))) == 4


def test_strip_screenings_are_cached_per_attack_parameters_defender_images_and_seed(
    monkeypatch, tmp_path
):
    from types import SimpleNamespace

    from backdoor_utils.core import cache
    from backdoor_utils import detectors
    from backdoor_utils.orchestration import defend
    from backdoor_utils.orchestration.experiments import Experiment

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    computed = []

    def screen(result, strip, defender, n_inputs, seed):
        computed.append(seed)
        return defend.Screening(
            torch.tensor([2.5, 3.0]), torch.tensor([0.25]), 0.5, 0.0, 1.0, 0.75
        )

    monkeypatch.setattr(defend, "screen_inputs", screen)
    result = SimpleNamespace(
        experiment=Experiment("patch", n_train=1000, epochs=1), key="model-a"
    )
    defender = SimpleNamespace(
        x_select=torch.zeros(4, 1, 28, 28), x_tune=torch.ones(4, 1, 28, 28)
    )
    strip = detectors.get("strip", n_overlays=10)

    def run(method=strip, n_inputs=100, seed=0):
        return defend.screen_inputs_cached(
            result, method, defender, n_inputs, seed, "cpu"
        )

    first, again = run(), run()
    assert len(computed) == 1  # the second from the cache, as it was
    assert torch.equal(again.clean_entropy, torch.tensor([2.5, 3.0])) and torch.equal(
        again.triggered_entropy, torch.tensor([0.25])
    )
    assert (again.threshold, again.frr, again.far, again.auroc) == (
        first.threshold,
        0.0,
        1.0,
        0.75,
    )
    run(
        method=detectors.get("strip", n_overlays=20)
    )  # STRIP's parameters are in the key
    run(n_inputs=200)  # so are the number of inputs
    run(seed=1)  # the seed
    defender.x_tune = torch.full((4, 1, 28, 28), 0.5)  # the defender's images
    run()
    result.experiment = Experiment(
        "patch", n_train=1000, epochs=1, poison_rate=0.02
    )  # and the attack
    run()
    assert len(computed) == 6 and len(list((tmp_path / "screenings").glob("*.pt"))) == 6


def _detection():
    three = ClassClustering(
        3,
        np.arange(6),
        np.linspace(0, 1, 12).reshape(6, 2),
        np.array([0, 0, 1, 1, 1, 2], np.int32),
        3,
        0.21,
        {2: 0.18, 3: 0.21},
    )
    flags = torch.tensor([True, True, False, False, False, False])
    table = [
        {
            "label": np.int64(3),
            "size": 2,
            "l": np.int64(1),
            "p": 7,
            "l_over_p": np.float64(1 / 7),
            "source_class": 5,
            "flagged": np.bool_(True),
        }
    ]
    found = Detection(
        [three],
        Reclassification(
            flags, table, torch.tensor([5, 5, -1, -1, -1, -1]), [np.arange(2)]
        ),
    )
    return found, {
        "precision": np.float64(1.0),
        "recall": 0.5,
        "f1": 2 / 3,
        "n_flagged": 2,
    }


def test_a_detection_survives_the_cache_as_it_was(tmp_path):
    from backdoor_utils.core.cache import load_cached, save_cached
    from backdoor_utils.orchestration.defend import pack_detection, unpack_detection

    found, scores = _detection()
    save_cached(tmp_path / "d.pt", pack_detection(found, scores), {})
    back, back_scores = unpack_detection(
        load_cached(tmp_path / "d.pt")
    )  # loaded with weights_only=True
    assert back_scores == scores
    c, original = (back.clusterings[0], found.clusterings[0])
    assert (c.label, c.k, c.silhouette, c.silhouettes) == (
        3,
        3,
        0.21,
        {2: 0.18, 3: 0.21},
    )
    for field in ("index", "projected", "assignments"):
        assert np.array_equal(getattr(c, field), getattr(original, field))
        assert getattr(c, field).dtype == getattr(original, field).dtype
    assert torch.equal(back.flags, found.flags) and torch.equal(
        back.reclassification.source_classes, found.reclassification.source_classes
    )
    assert back.reclassification.table == [
        {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
        for row in found.reclassification.table
    ]
    assert [m.tolist() for m in back.reclassification.members] == [[0, 1]]


def test_activation_clustering_detections_are_cached_per_attack_detector_and_seed(
    monkeypatch, tmp_path
):
    from types import SimpleNamespace

    from backdoor_utils.core import cache
    from backdoor_utils import detectors
    from backdoor_utils.orchestration import defend
    from backdoor_utils.orchestration.experiments import Experiment

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    computed = []

    def detect(result, detector, seed=0, device="auto"):
        computed.append((type(detector).__name__, seed))
        return _detection()

    monkeypatch.setattr(defend, "detect_and_score", detect)
    result = SimpleNamespace(
        experiment=Experiment("patch", n_train=1000, epochs=1), key="model-a"
    )
    ac = detectors.get("activation_clustering")
    found, scores = defend.detect_cached(result, ac, seed=0, device="cpu")
    again, _ = defend.detect_cached(result, ac, seed=0, device="cpu")
    assert len(computed) == 1 and torch.equal(
        again.flags, found.flags
    )  # the second from the cache
    defend.detect_cached(result, ac, seed=1, device="cpu")  # the seed is in the key
    defend.detect_cached(
        result, detectors.get("activation_clustering", max_clusters=3), 0, "cpu"
    )  # parameters
    result.experiment = Experiment("patch", n_train=1000, epochs=1, poison_rate=0.02)
    defend.detect_cached(result, ac, seed=0, device="cpu")  # and the attack
    assert len(computed) == 4 and len(list((tmp_path / "detections").glob("*.pt"))) == 4
    defend.detect_cached(result, detectors.get("spectral_signatures"), 0, "cpu")
    defend.detect_cached(result, detectors.get("spectral_signatures"), 0, "cpu")
    assert (
        computed[-2:] == [("SpectralSignatures", 0)] * 2
    )  # other detectors run as they are


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
