"""What the reader is told is scored honestly: detections against the true poison flags,
STRIP on non-target triggered test inputs with a threshold from the defender's own clean
images, each matrix cell with its defense's own metric, a retraining without exactly the
flagged images.
"""

from types import SimpleNamespace

import pytest
import torch

from backdoor_utils.core import cache
from backdoor_utils.orchestration import defend, experiments
from backdoor_utils.orchestration.experiments import Experiment
from backdoor_utils.core.models import SimpleCNN
import numpy as np
from backdoor_utils.detectors.activation_clustering import (
    ClassClustering,
    Detection,
    Reclassification,
)

TARGET = 0


def _coded(n, first):
    """``n`` images whose pixel (0, 0) carries a value of our choosing and (0, 1) the
    image's index."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, 0, 0, 0] = first
    x[:, 0, 0, 1] = torch.arange(n) / 10_000
    return x


class _EntropyIsPixelZero:
    """A STRIP stand-in: an input's entropy is its pixel (0, 0); records what it was
    given."""

    suspicious_below = True  # low entropy: triggered

    def __init__(self):
        self.calls = {}

    def threshold(self, model, x_clean, x_pool, seed=0):
        self.calls["threshold"] = (x_clean, x_pool)
        return 0.5

    def statistic(self, model, x, x_pool, seed=0):
        self.calls.setdefault("entropy", []).append(x_pool)
        return x[:, 0, 0, 0].clone()


class _Trigger:
    """Sends an image's pixel (0, 0) - its stand-in entropy - to 0.9 (passes STRIP) when
    its pixel (0, 2) is bright, else to 0.1 (rejected)."""

    def apply(self, x):
        out = x.clone()
        out[:, 0, 0, 0] = torch.where(x[:, 0, 0, 2] > 0.5, 0.9, 0.1)
        return out


def _screened_attack():
    """An attack result of 100 test inputs whose stand-in statistic is pixel (0, 0) - 30
    clean inputs at 0.2, the rest at 0.8 - with every fourth input and every target
    image bright at pixel (0, 2) (the trigger then sends it to 0.9), and the defender's
    images."""
    y_test = torch.arange(100) % 10
    x_test = _coded(100, torch.where(torch.arange(100) < 30, 0.2, 0.8))
    x_test[:, 0, 0, 2] = ((torch.arange(100) % 4 == 0) | (y_test == TARGET)).float()
    result = SimpleNamespace(
        model=None,
        trigger=_Trigger(),
        experiment=SimpleNamespace(target_label=TARGET),
        splits=SimpleNamespace(x_test=x_test, y_test=y_test),
    )
    defender = SimpleNamespace(x_tune=_coded(20, 0.3), x_select=_coded(10, 0.4))
    return result, defender, y_test


def test_strip_is_scored_on_non_target_test_inputs_with_a_threshold_from_the_defenders_own_images():
    result, defender, y_test = _screened_attack()
    strip = _EntropyIsPixelZero()
    screening = defend.screen_inputs(result, strip, defender, n_inputs=100)
    x_clean, x_pool = strip.calls["threshold"]
    assert torch.equal(x_clean, defender.x_select) and torch.equal(
        x_pool, defender.x_tune
    )  # never test images
    assert all(torch.equal(pool, defender.x_tune) for pool in strip.calls["entropy"])
    assert screening.threshold == 0.5 and screening.frr == pytest.approx(0.30)
    non_target = y_test != TARGET
    expected_far = float(
        ((torch.arange(100) % 4 == 0) & non_target).sum() / non_target.sum()
    )
    assert screening.far == pytest.approx(
        expected_far
    )  # accepted = at or above the threshold
    assert len(screening.triggered_score) == int(non_target.sum())


def test_a_detection_is_scored_against_the_true_poison_flags_not_the_labels():
    # genuine target-class images carry the target label too: only the poison flags say
    # what a detector should have found
    y = torch.tensor([0, 0, 0, 0, 1, 2, 3, 0])
    is_poison = torch.tensor([False, False, True, True, False, False, False, True])
    result = SimpleNamespace(
        model=None,
        experiment=SimpleNamespace(target_label=0),
        poisoned=SimpleNamespace(x=torch.zeros(8, 1, 28, 28), y=y, is_poison=is_poison),
    )
    detector = SimpleNamespace(
        detect=lambda model, x, y, **kw: SimpleNamespace(flags=is_poison.clone())
    )
    _, scores = defend.detect_and_score(result, detector)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)
    assert scores["n_poison"] == 3 and scores["flagged_fraction"] == pytest.approx(
        3 / 8
    )


def test_a_matrix_cell_reports_each_defenses_own_metric_and_its_price(monkeypatch):
    from backdoor_utils import defenses, detectors

    scores = {"precision": 0.25, "recall": 0.75, "f1": 0.375}
    flags = torch.tensor([True, False])
    found = SimpleNamespace(flags=flags)
    monkeypatch.setattr(defend, "detect_and_score", lambda *a, **k: (found, scores))
    monkeypatch.setattr(
        defend,
        "screen_inputs",
        lambda *a, **k: defend.Screening(None, None, 0.5, 0.02, 0.125, 0.9),
    )
    retrained = []
    monkeypatch.setattr(
        defend,
        "retrain_without",
        lambda result, remove, device: retrained.append(remove) or "retrained",
    )
    measured = {"retrained": {"asr": 0.25, "clean_acc": 0.97}}
    monkeypatch.setattr(
        defend, "Measure", lambda *a: lambda model: {**measured[model], "val_acc": 0}
    )
    result = SimpleNamespace(
        model="attacked",
        clean_acc=0.99,
        asr=0.95,
        splits=None,
        trigger=None,
        experiment=SimpleNamespace(target_label=0),
    )

    def cell(method):
        return defend.defense_cell(result, method, None)

    ac = cell(detectors.get("activation_clustering"))
    assert ac["value"] == 0.375  # F1
    assert retrained[0] is flags  # the model retrained without what it flagged
    assert ac["asr_after"] == 0.25 and ac["ca_cost_pp"] == pytest.approx(2.0)
    assert ac["der"] == pytest.approx((0.70 - 0.02 + 1) / 2)
    assert cell(detectors.get("spectral_signatures"))["value"] == 0.75  # recall
    assert cell(detectors.get("strip")) == {
        "value": 0.125,
        "auroc": 0.9,
        "frr": 0.02,
    }  # FAR; STRIP changes no model, so it has no CA price
    pruning = defenses.get("fine_pruning")
    monkeypatch.setattr(
        type(pruning), "repair", lambda *a: SimpleNamespace(model="retrained")
    )
    pruned = cell(pruning)
    assert pruned["value"] == pruned["asr_after"] == 0.25  # ASR after the repair
    assert pruned["clean_acc_after"] == 0.97


def test_retraining_without_flagged_images_trains_on_all_the_others(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    seen = {}

    def train_model(x, y, config, device, desc=""):
        seen.update(x=x, y=y)
        return SimpleCNN()

    monkeypatch.setattr(experiments, "train_model", train_model)
    x, y = _coded(50, 0.5), torch.arange(50) % 10
    remove = torch.zeros(50, dtype=torch.bool)
    remove[[3, 17, 18, 40]] = True
    result = SimpleNamespace(
        experiment=Experiment("patch", n_train=50, epochs=1),
        poisoned=SimpleNamespace(x=x, y=y),
        key="model-a",
    )
    experiments.retrain_without(result, remove, "cpu")
    assert torch.equal(seen["x"], x[~remove]) and torch.equal(seen["y"], y[~remove])


def test_an_attacks_clean_accuracy_and_asr_are_measured_on_the_test_set(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    seen = {}
    monkeypatch.setattr(
        experiments,
        "clean_accuracy",
        lambda model, x, y: seen.update(ca=(x, y)) or 0.875,
    )
    monkeypatch.setattr(
        experiments,
        "attack_success_rate",
        lambda model, x, y, trigger, target: seen.update(asr=(x, y, target)) or 0.625,
    )
    result = experiments.run_attack(
        Experiment("patch", n_train=200, epochs=1, target_label=3), "cpu"
    )
    x_test, y_test = result.splits.x_test, result.splits.y_test
    assert (result.clean_acc, result.asr) == (0.875, 0.625)
    assert torch.equal(seen["ca"][0], x_test) and torch.equal(seen["ca"][1], y_test)
    assert (
        torch.equal(seen["asr"][0], x_test)
        and torch.equal(seen["asr"][1], y_test)
        and seen["asr"][2] == 3
    )


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

    def cell(result, method, defender, seed, device, strip_inputs, priced):
        computed.append((method.name, seed))
        return {"value": 0.25 * len(computed), "frr": 0.01}

    monkeypatch.setitem(defend.CELLS, "screening", cell)
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
    assert torch.equal(again.clean_score, torch.tensor([2.5, 3.0])) and torch.equal(
        again.triggered_score, torch.tensor([0.25])
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


def test_a_training_time_defense_cell_trains_on_the_poisoned_set_and_scores_what_it_isolated(
    monkeypatch,
):
    from backdoor_utils import defenses
    from backdoor_utils.orchestration.experiments import Experiment

    x, y = torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 0, 2])
    truth = torch.tensor([False, False, True, True])
    seen = {}

    def train_defended(self, xs, ys, config, device):
        seen.update(x=xs, y=ys, epochs=config.epochs, seed=config.seed)
        return defenses.Repair("defended", {"isolated": torch.tensor([0, 0, 1, 0]) > 0})

    abl = defenses.get("abl")
    monkeypatch.setattr(type(abl), "train_defended", train_defended)
    monkeypatch.setattr(
        defend, "Measure", lambda *a: lambda model: {"asr": 0.02, "clean_acc": 0.985}
    )
    result = SimpleNamespace(
        model="attacked",
        clean_acc=0.99,
        asr=0.97,
        splits=None,
        trigger=None,
        experiment=Experiment("patch", epochs=3, seed=4),
        poisoned=SimpleNamespace(x=x, y=y, is_poison=truth),
    )
    cell = defend.defense_cell(result, abl, None)
    assert seen["x"] is x and seen["y"] is y  # the training set as given, poisons in
    assert (seen["epochs"], seen["seed"]) == (3, 4)  # the attack's own recipe
    assert cell["value"] == cell["asr_after"] == 0.02
    assert cell["ca_cost_pp"] == pytest.approx(0.5)
    assert (cell["isolated_precision"], cell["isolated_recall"]) == (1.0, 0.5)


class _ConsistencyIsPixelZero(_EntropyIsPixelZero):
    """A SCALE-UP stand-in: suspicious at or *above* the threshold."""

    suspicious_below = False


def test_an_input_filter_suspicious_above_its_threshold_is_scored_the_other_way():
    result, defender, y_test = _screened_attack()
    screening = defend.screen_inputs(
        result, _ConsistencyIsPixelZero(), defender, n_inputs=100
    )
    assert screening.frr == pytest.approx(0.70)  # clean at 0.8: at or above 0.5
    non_target = y_test != TARGET
    bright = float(((torch.arange(100) % 4 == 0) & non_target).sum() / non_target.sum())
    assert screening.far == pytest.approx(1 - bright)  # accepted: below the threshold
    assert screening.auroc < 0.5  # here the clean inputs are the consistent ones
