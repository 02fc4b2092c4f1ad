"""The book's targets at full parameters (``make test-full``; several hours on 2 CPU
cores).

Each chapter runs with its defaults into ``runs/full/``; trained models come from the
shared cache. A failing assertion here is a missed target: report it with the measured
number.
"""

import pytest

from backdoor_utils.tooling.cli import execute
from tests.notebooks.test_static import ROOT

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def full():
    cache = {}

    def run(stem):
        if stem not in cache:
            cache[stem] = execute(
                ROOT / "notebooks" / f"{stem}.ipynb",
                {},
                ROOT / "runs" / "full" / f"{stem}.ipynb",
            )
        return cache[stem]

    return run


def test_01_pixel_targets(full):
    v = full("01_pixel_trigger")
    assert v["clean_acc_baseline"] >= 0.990
    assert v["asr"] >= 0.995
    assert v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_02_noise_targets(full):
    v = full("02_noise_trigger")
    assert v["psnr_db"] >= 35
    assert v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_02_noise_asr_target_at_the_cheapest_setting_of_the_map(full):
    # measured 2026-11-26 (AVX2 CPU): eps 8/255 at 1% poison gives ASR 0.7565; the map's
    # cheapest setting with PSNR >= 35 dB and ASR >= 0.98 is eps 10/255 at 1% (35.7 dB,
    # ASR 0.9959), the default
    v = full("02_noise_trigger")
    assert v["asr"] >= 0.98 and v["psnr_db"] >= 35
    assert v["grid_default_sentence"] == "It is this chapter's default setting."


def test_03_blur_targets(full):
    v = full("03_blur_trigger")
    assert v["asr"] >= 0.98 and v["clean_acc"] >= v["clean_acc_baseline"] - 0.005


def test_04_learned_targets(full):
    v = full("04_learned_trigger")
    assert v["asr"] >= 0.995 and v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_05_detection_targets(full):
    v = full("05_activation_clustering")
    assert v["f1"] >= 0.95
    assert v["clean_flagged_fraction"] <= 0.01


@pytest.mark.xfail(
    reason=(
        "missed (2026-11-25, AVX2 CPU): F1 0.9925 / 0.9972 / 0 / 0 / 0 over the five"
        " runs - seed 2 / target 0: the poisons' own cluster (511 of 540) is kept"
        " because the reclassifier learns the trigger from the 29 left (l/p 1.58);"
        " seeds 3/7 and 4/3: silhouette picks k = 2 and the poisons are split inside"
        " halves of genuine digits"
    )
)
def test_05_detection_holds_on_every_run(full):
    assert full("05_activation_clustering")["f1_min"] >= 0.95


@pytest.mark.xfail(
    reason=(
        "missed (2026-11-25, AVX2 CPU): the 8 poisons the detector misses keep the"
        " backdoor after removal and retraining (ASR 0.383, CA 0.991); relabelling"
        " instead reaches ASR 0.0089"
    )
)
def test_05_removal_repairs(full):
    v = full("05_activation_clustering")
    assert v["asr_after"] <= 0.05 and v["clean_acc_after"] >= 0.985


def test_05_relabelling_repairs(full):
    v = full("05_activation_clustering")
    assert v["asr_relabel"] <= 0.05 and v["clean_acc_relabel"] >= 0.985


def test_06_defense_targets(full):
    v = full("06_fine_pruning")
    assert (
        v["nc_flagged_label"] == "0" and v["nc_anomaly_index"] > 2
    )  # a string: "0", "0, 3" or "none"
    assert v["nc_clean_flagged_count"] == 0
    assert v["nc_clean_acc_after"] >= v["clean_acc_before"] - 0.01


@pytest.mark.xfail(
    reason=(
        "missed (2026-11-26, AVX2 CPU, fresh-clone build): unlearning the reversed"
        " trigger brings ASR from 0.9996 to 0.0620, just above the bar (a bf16 CPU"
        " measured 0.0489 on 2026-11-25's earlier code)"
    )
)
def test_06_unlearning_removes_the_backdoor(full):
    assert full("06_fine_pruning")["nc_asr_after"] <= 0.05


def test_06_neural_cleanse_holds_on_every_run(full):
    v = full("06_fine_pruning")
    assert v["nc_runs_target_flagged"] == v["nc_n_runs"] >= 2
    assert v["nc_runs_false_flags"] == 0


def test_06_the_books_neural_cleanse_budget_reaches_the_authors_verdicts(full):
    v = full("06_fine_pruning")
    assert v["nc_budget_agree"], (
        v["nc_budget_book_verdicts"],
        v["nc_budget_authors_verdicts"],
    )


def test_07_blended_and_wanet_targets(full):
    v = full("07_more_attacks")
    assert (
        v["blend_asr"] >= 0.98
        and v["blend_clean_acc"] >= v["clean_acc_baseline"] - 0.003
    )
    # the WaNet paper: CA 0.9952 / ASR 0.9986 on MNIST with its own network; ours: ASR
    # >= 0.98, CA within 0.5 pp
    assert v["wanet_asr"] >= 0.98 and v["wanet_ca_gap_pp"] <= 0.5
    assert v["sig_n_mislabelled"] == 0 and v["max_clean_control"] < 0.01


def test_07_sig_implants_at_every_run_at_the_maps_cheapest_setting(full):
    # the first version (delta 20/255 on 10-40% of the target class, tested with the
    # same signal) reached ASR 0.0011-0.0014 (2026-11-26, AVX2 CPU); the map adds the
    # benchmarks' 30 and 40/255 and a test signal twice the training one
    v = full("07_more_attacks")
    assert v["sig_map_sentence"].startswith("SIG implants"), v["sig_pick_text"]
    assert v["sig_map_control"] < 0.05  # the test signal alone fools no clean model


def test_08_strip_target_and_a_full_matrix(full):
    v = full("08_defense_matrix")
    assert (
        v["strip_far"] <= 0.01
    )  # measured 2026-11-26 (AVX2 CPU): FAR 0.001, FRR 0.011 on test, AUROC 1.0
    assert v["n_attacks"] == 7 and v["n_defenses"] == 8 and v["n_seeds"] >= 3
    assert len([k for k in v if k.startswith("cell_")]) == 56  # every cell has its text
    # a cell is judged for every attack that implanted a backdoor at one seed at least
    assert v["n_cells"] == 8 * v["n_attacks_judged"]


@pytest.mark.xfail(
    reason=(
        "missed (2026-11-26, AVX2 CPU): the paper's recipe with epsilon 0.1 removes"
        " 8,095 images and catches 135 of 540 poisons (recall 0.25, ASR after"
        " retraining 0.9895): in label 0 the poisons lie along the third singular"
        " direction (AUROC 0.999), the first gives AUROC 0.58"
    )
)
def test_08_spectral_signatures_target_or_what_decides_it(full):
    # the book's target (recall >= 0.9) at the authors' setting, or the chapter says it
    # is missed and which choice (layer or scoring) moves recall more
    v = full("08_defense_matrix")
    meets = v["ss_reference_recall"] >= 0.9
    assert (
        "The reference setting meets the target" in v["ss_choice_sentence"]
    ) == meets
    assert "decides more" in v["ss_choice_sentence"]


def test_09_adaptive_attack_is_measured_over_seeds(full):
    v = full("09_adaptive_attacker")
    # measured 2026-11-26 (AVX2 CPU, 3 seeds): AC F1 0.996 -> 0.903, SS recall 0.053 ->
    # 0.695, ASR 0.9996 -> 1.0000
    assert v["n_seeds"] >= 3
    assert v["asr_blended"] >= 0.98 and v["asr_adaptive"] >= 0.9
    drop = max(v["ac_blended"] - v["ac_adaptive"], v["ss_blended"] - v["ss_adaptive"])
    assert v["adaptive_sentence"].startswith("The adaptive attack defeats") == (
        drop >= 0.2
    )


def test_10_dpa_trains_within_ten_minutes_and_certifies(full):
    # the target: k = 1,200 trained in <= 10 minutes on 2 cores; measured
    # 2026-12-07 (bf16 CPU shared with a build): 467 s, clean 0.858, median 316 (the
    # paper, with a Network-in-Network: 0.9581, 448)
    v = full("10_certified_defense")
    assert v["k"] == 1200 and v["dpa_seconds"] <= 600
    assert v["dpa_clean_acc"] >= 0.85 and v["dpa_median"] >= 300
