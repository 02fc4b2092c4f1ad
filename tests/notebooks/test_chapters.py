"""Every chapter executed through papermill with small parameters; assertions on its
glued values.

The small settings (3,000 training images, 3 epochs, 5% poison) keep each chapter near a
minute on 2 CPU cores. The floors are far below the full-parameter results but far above
what a broken attack or detector produces. Two honest exceptions, measured: the blur
backdoor needs more steps to form (6,000 images x 5 epochs), and the faint noise
backdoor does not form at any test-sized setting (ASR about 0.02 even at 10,000 images x
5 epochs), so chapter 02 is checked for its distortion measurements and its pipeline
here and for its attack in ``make test-full``. Likewise at this scale the pixel poisons
do not form their own activation cluster (chapter 05 flags nothing) and Neural Cleanse
ranks the target first without crossing the threshold (chapter 06): their targets are
asserted in ``make test-full``, their mechanics in ``tests/unit``. The same holds for
chapter 07's SIG and WaNet backdoors (they do not form this small) and for chapter 08's
Spectral Signatures (recall only a little above chance on so small a model), while STRIP
and the matrix's bookkeeping are checked here.
"""

import pytest

from backdoor_utils.tooling.cli import execute
from backdoor_utils.tooling.chapters import (
    HEADLINE_METRICS,
    image_outputs,
    plotting_cells,
)
from backdoor_utils.tooling.sentences import computed_with
from tests.conftest import require_xdist_group
from tests.notebooks.test_static import ROOT

SMALL = {"n_train": 3000, "epochs": 3, "poison_rate": 0.05, "seed": 0}
EXTRA = {
    "01_pixel_trigger": {"poison_rates": [0.02, 0.05]},
    "02_noise_trigger": {
        "eps_values": [10 / 255],
        "grid_eps_values": [10 / 255],
        "grid_poison_rates": [0.05],
        "seeds": [0, 1],
    },
    "03_blur_trigger": {"n_train": 6000, "epochs": 5},
    "04_learned_trigger": {"poison_rates": [0.005], "trigger_lr_scales": [1, 100]},
    "05_activation_clustering": {
        "attacks": ["patch"],
        "reclassify_epochs": 6,
        "robustness_runs": [[1, 3]],
    },
    "06_fine_pruning": {
        "n_clean_finetune": 2000,
        "finetune_epochs": 3,
        "nc_steps": 45,
        "nc_samples": 160,
        "nc_runs": [],
        "nc_budget_runs": [[0, 0]],
        "nc_reference_steps": 50,
        "nc_reference_samples": 96,
    },
    "07_more_attacks": {
        "blend_alphas": [0.2],
        "sig_shares": [0.4],
        "sig_share": 0.4,
        "sig_deltas": [40 / 255],
        "sig_runs": [[0, 0], [1, 3]],
        "ramp_shares": [0.4],
        "wanet_epochs": 3,
    },
    "08_defense_matrix": {
        "n_train": 2000,
        "attacks": ["patch"],
        "wanet_epochs": 3,
        "matrix_runs": [[0, 0], [1, 3]],
        "ibau_rounds": 1,
        "ss_epsilon": 0.35,
        "strip_overlays": 20,
        "strip_inputs": 200,
        "nc_steps": 20,
        "nc_samples": 64,
        "n_clean_finetune": 1000,
        "finetune_epochs": 3,
    },
    "10_certified_defense": {
        "k": 30,
        "more_k": [60],
        "dpa_epochs": 20,
        "dpa_hidden": 32,
        "budgets": [0, 2, 4, 8],
    },
    "09_adaptive_attacker": {
        "seeds": [0],
        "ss_epsilon": 0.35,
        "ct_clean": 500,
        "ct_pretrain_epochs": [1, 1, 2, 2, 2, 2],
        "ct_iterations": [50, 50, 50, 50, 25, 25],
    },
}


OUTPUTS = {}  # stem -> executed notebook

# With `pytest -n` (make test), every test of a chapter carries the chapter's xdist
# group, so one worker executes the chapter once and runs all of its tests; the slowest
# chapters come first so the two workers finish together (measured at test scale: 06 and
# 08 take the longest).
SLOWEST_FIRST = [
    "06_fine_pruning",
    "08_defense_matrix",
    "05_activation_clustering",
    "07_more_attacks",
    "03_blur_trigger",
    "01_pixel_trigger",
    "09_adaptive_attacker",
    "02_noise_trigger",
    "04_learned_trigger",
    "10_certified_defense",
]
assert sorted(SLOWEST_FIRST) == sorted(HEADLINE_METRICS), "every chapter is tested"
CHAPTERS = [
    pytest.param(stem, marks=pytest.mark.xdist_group(stem)) for stem in SLOWEST_FIRST
]


def group(stem):
    """The xdist group of the tests that read chapter ``stem``."""
    return pytest.mark.xdist_group(stem)


@pytest.fixture(scope="session")
def executed_chapter(tmp_path_factory):
    executed = {}

    def run(stem):
        if stem not in executed:
            out = tmp_path_factory.mktemp("chapters") / f"{stem}.ipynb"
            executed[stem] = execute(
                ROOT / "notebooks" / f"{stem}.ipynb", {**SMALL, **EXTRA[stem]}, out
            )
            OUTPUTS[stem] = out
        return executed[stem]

    return run


@pytest.fixture
def chapter(request, executed_chapter):
    """``chapter(stem)``: the chapter's glued values, executed once per worker - so a
    test may read only the chapter named by its xdist group (else a second worker would
    execute it again).
    """

    def run(stem):
        require_xdist_group(
            request, stem, f"reads {stem}: mark it xdist_group({stem!r})"
        )
        return executed_chapter(stem)

    return run


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_shows_a_figure_for_every_plotting_cell(chapter, stem):
    # fails when the kernels' display is switched off (e.g. MPLBACKEND=Agg in the
    # environment)
    chapter(stem)
    expected = plotting_cells(ROOT / "notebooks" / f"{stem}.ipynb")
    assert expected > 0
    assert image_outputs(OUTPUTS[stem]) >= expected


def _fraction(value):
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_glues_its_headline_values_as_fractions(chapter, stem):
    values = chapter(stem)
    for name in HEADLINE_METRICS[stem]:
        assert name in values, f"{stem} did not glue {name}"
        if name not in {"psnr_db", "nc_anomaly_index"}:
            assert _fraction(
                values[name]
            ), f"{stem}: {name} = {values[name]!r} is not a fraction"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_states_the_machine_and_precision_it_ran_with(chapter, stem):
    # the kernel inherits this process's thread count and precision (BACKDOOR_BF16, the
    # CPU's flags)
    assert chapter(stem)["computed_with"] == computed_with()


@group("01_pixel_trigger")
def test_pixel_backdoor_works_and_keeps_clean_accuracy(chapter):
    v = chapter("01_pixel_trigger")
    assert v["clean_acc_baseline"] > 0.85
    assert v["asr"] > 0.90
    assert abs(v["clean_acc"] - v["clean_acc_baseline"]) < 0.03
    assert (
        v["min_rate_asr95"] in (0.02, 0.05)
        or v["min_rate_asr95"] != v["min_rate_asr95"]
    )  # NaN = none reached


@group("02_noise_trigger")
def test_noise_trigger_is_faint_and_measured(chapter):
    v = chapter("02_noise_trigger")
    assert v["psnr_db"] > 35
    assert 10 / 255 * 0.99 <= v["linf"] <= 10 / 255 + 1e-6
    assert v["clean_acc"] > 0.85
    assert v["false_fire_rate"] < 0.1
    assert (
        0.05 < v["study_untriggered_rate"] < 0.15
    )  # about the share of the target class
    # the default setting retrained with every seed: one ASR each, and the sentence
    # follows the count
    assert v["n_seeds"] == 2 and len(v["seed_asr_text"].split(", ")) == 2
    assert v["seed_sentence"].startswith("The setting holds") == (
        v["n_seeds_reached"] == 2
    )


@group("03_blur_trigger")
def test_blur_trigger_works(chapter):
    v = chapter("03_blur_trigger")
    assert v["asr"] > 0.9
    assert v["clean_acc"] > 0.9
    assert 0 <= v["false_trigger_rate"] <= 1


@group("04_learned_trigger")
def test_learned_patch_works(chapter):
    v = chapter("04_learned_trigger")
    assert v["asr"] > 0.9
    assert v["clean_acc"] > 0.85
    # training moves the patch (a hook that left it frozen would give 0), and the page's
    # verdict on learning it follows the measured gain over the fixed patch
    assert 0 < v["moved"] <= 1
    # the trigger's own step size moves it further, and each step size's verdict follows
    # its gain
    assert set(v["moved_by_scale"]) == {1.0, 100.0}
    assert v["moved_by_scale"][100.0] > 3 * v["moved_by_scale"][1.0] > 0
    for scale, gain in v["gain_by_scale"].items():
        verdict = (
            "learning the patch pays"
            if gain >= 0.05
            else "learning the patch brings no measurable gain"
        )
        assert f"With s = {scale:g}, {verdict}" in v["learned_sentence"]
    assert v["ca_change"].endswith("the clean model") or v["ca_change"].startswith(
        "the same as"
    )


@group("05_activation_clustering")
def test_activation_clustering_raises_no_false_alarm_and_reports_consistently(chapter):
    v = chapter("05_activation_clustering")
    # measured at this scale (3,000 images, 3 epochs, 5% poison, 2026-11-25, AVX2 CPU):
    # the pixel backdoor forms (ASR 0.975) but its poisons do not form their own cluster
    # in so small a model, so neither recipe flags anything (F1 0.0) - the detector's
    # targets are checked at full scale in `make test-full` (F1 0.9925, clean model 0.0
    # flagged, measured there)
    assert v["asr_before"] > 0.9
    assert v["clean_flagged_fraction"] < 0.05  # a clean model raises (almost) no alarm
    assert v["n_runs"] == 2 and 0.0 <= v["f1_min"] <= v["f1_mean"] <= 1.0
    for name in ("precision", "recall", "f1", "f1_plain_2means", "study_f1"):
        assert _fraction(v[name]), name
    if v["recall"] < 0.5:  # most poisons kept: retraining cannot remove the backdoor
        assert v["asr_after"] > 0.5
    assert v["removal_sentence"].startswith("does not remove") == (
        v["asr_after"] > 0.05
    )
    assert v["relabel_sentence"].startswith("does not remove") == (
        v["asr_relabel"] > 0.05
    )
    if (
        v["n_relabelled"] == 0
    ):  # nothing flagged, nothing relabelled: the same training set
        assert v["asr_relabel"] > 0.5 and v["source_accuracy"].startswith("n/a")
    # the attacks' sentence explains exactly the attacks below F1 0.9, with where their
    # poisons went
    missed = "On the patch attack the detector misses: " in v["attacks_sentence"]
    assert missed == (v["f1_patch"] < 0.9)
    if missed:
        assert (
            "poisons" in v["attacks_sentence"] and "true flags" in v["attacks_sentence"]
        )


@group("06_fine_pruning")
def test_fine_pruning_and_neural_cleanse_report_measured_values(chapter):
    v = chapter("06_fine_pruning")
    # measured at this scale (2026-11-26, AVX2 CPU, one torch thread as in make test):
    # pruning stops at 39 channels; the true target has the largest anomaly index (1.97
    # with 45 steps, 1.96 with 60; clean model's largest 1.04) but below the threshold
    # 2, so nothing is unlearned; full scale: make test-full. With 40 steps or 128
    # images the target's index falls (1.40, 1.21). On the bf16 CPU (2026-12-07): 1.64,
    # and the budget study (the second budget 50 steps over 96 images here, to keep
    # make test short) says "seed 0: missed" at both budgets.
    assert v["asr_before"] > 0.9
    assert 16 <= v["n_pruned"] <= 60
    assert v["nc_target_anomaly_index"] == v["nc_anomaly_index"] > 1.0
    assert v["nc_unreached"] == 0
    assert v["nc_clean_flagged_count"] == 0
    # the table over runs holds the chapter's own model (nc_runs is empty here) with its
    # verdict
    assert v["nc_n_runs"] == 1
    assert v["nc_runs_target_flagged"] == int(
        "0" in v["nc_flagged_label"].split(", ")
    )  # default target 0
    assert v["fp_clean_acc_after"] > 0.8
    # the budget study keeps the cheaper budget only when the verdicts agree
    agree = v["nc_budget_book_verdicts"] == v["nc_budget_authors_verdicts"]
    assert v["nc_budget_agree"] == agree
    assert v["nc_budget_sentence"].startswith("The verdicts agree") == agree
    if v["nc_flagged_label"] == "none":  # nothing to unlearn: the model is unchanged
        assert v["nc_asr_after"] == v["asr_before"]
    assert v["fp_sentence"].startswith("does not remove") == (v["fp_asr_after"] > 0.05)


@group("07_more_attacks")
def test_more_attacks_plant_their_backdoors_and_report_consistently(chapter):
    v = chapter("07_more_attacks")
    # measured at this scale (3,000 images, 3 epochs, 2026-11-26, AVX2 CPU): blended ASR
    # 0.82; SIG (40% of the target class) and WaNet (10% poison) do not form a backdoor
    # this small (ASR 0.011 and 0.043, at the clean model's level) - their targets are
    # checked in make test-full
    assert v["blend_asr"] > 0.5 > v["blend_clean_control"]
    assert v["blend_psnr_db"] < 25  # alpha 0.2 of a full-image key is plainly visible
    assert v["sig_n_mislabelled"] == 0 and v["sig_only_target"] is True  # clean-label
    assert v["sig_n_poison"] > 0 and v["sig_asr_max"] >= v["sig_asr"]
    assert v["max_clean_control"] < 0.05  # no trigger fools the clean model
    # SIG's map: its sentence and its choice follow the lowest ASR over the runs
    implants = not v["sig_pick_text"].startswith("none implants")
    assert v["sig_map_sentence"].startswith("SIG implants") == implants
    assert "seed 1 target 3" in v["sig_runs_text"]
    met = v["wanet_asr"] >= 0.98 and v["wanet_ca_gap_pp"] <= 0.5
    assert v["wanet_sentence"].startswith("meets") == met
    for name in ("sig_clean_acc", "wanet_plain_clean_acc"):
        assert v[name] > 0.8, name
    # the authors' post-warp crop and rotation slow learning at this scale (measured
    # 2026-12-06, bf16 CPU: CA 0.775 against 0.872 without them)
    assert v["wanet_clean_acc"] > 0.7


@group("08_defense_matrix")
def test_defense_matrix_scores_spectral_signatures_strip_and_every_cell(chapter):
    v = chapter("08_defense_matrix")
    # at this scale 5% of the set is poisoned into the target: about a third of that
    # label, hence ss_epsilon 0.35 (the bound must cover the poisoned share of the label,
    # as in the paper). At the authors' setting (conv features, |R.v|) the removal finds
    # almost none of the poisons here (measured 2026-12-06, bf16 CPU: recall 0.007) - a
    # finding the chapter reports, not a floor to test; the detector itself is checked
    # by its unit tests. Here: the numbers are fractions and the sentences follow them.
    assert 0.0 <= v["ss_recall"] <= 1.0 and v["ss_n_removed"] > v["ss_n_poison"]
    assert ("reference setting meets the target" in v["ss_choice_sentence"]) == (
        v["ss_reference_recall"] >= 0.9
    )
    assert v["ss_recall_sentence"].startswith("meets") == (v["ss_recall"] >= 0.9)
    # a backwards entropy would give AUROC ~0; the reference blend's FAR at this scale is
    # a finding (measured 2026-12-06, bf16 CPU: 0.26, the saturated first setting 0.01)
    assert v["strip_auroc"] > 0.9 and 0.0 <= v["strip_first_far"] <= 1.0
    assert (
        v["strip_frr_test"] < 0.05
    )  # the threshold set on held-out clean images holds on the test set
    assert 0.0 <= v["scale_far"] <= 1.0 and 0.0 <= v["scale_auroc"] <= 1.0
    assert v["scale_saturation_sentence"].startswith("Saturation hurts") == (
        v["scale_clean_full"] >= 0.01
    )
    # the pixel attack implants its backdoor at this scale, so all eight of its cells are
    # judged
    assert (v["n_attacks"], v["n_defenses"], v["n_seeds"], v["n_cells"]) == (1, 8, 2, 8)
    assert v["implanted_sentence"].startswith("Every attack implanted")
    # the results page pastes both (their rows: unit-tested)
    assert "matrix_table_detectors" in v and "matrix_table_repairs" in v
    failing = [] if v["failing_cells"] == "none" else v["failing_cells"].split("; ")
    assert len(failing) == v["n_cells"] - v["n_cells_ok"]
    # the run-by-run sentences: I-BAU judged at both runs, ABL's isolation at both runs
    # of the matrix and of the paper's poison rate
    assert v["ibau_price_sentence"].startswith("I-BAU meets its metric")
    assert "of the 2 runs where an attack worked" in v["ibau_price_sentence"]
    assert v["abl_isolation_sentence"].startswith("Over the matrix's 2 runs")
    assert "at the 2 runs and ASR after" in v["abl_isolation_sentence"]


@group("09_adaptive_attacker")
def test_adaptive_attacker_is_scored_against_both_latent_separation_defenses(chapter):
    v = chapter("09_adaptive_attacker")
    assert v["asr_blended"] > 0.5  # the reference attack works at this scale
    for name in ("ac_blended", "ac_adaptive", "ss_blended", "ss_adaptive"):
        assert _fraction(v[name]), name
    assert -1.0 <= v["sep_adaptive"] <= 1.0 and -1.0 <= v["sep_blended"] <= 1.0
    drop = max(v["ac_blended"] - v["ac_adaptive"], v["ss_blended"] - v["ss_adaptive"])
    assert v["adaptive_sentence"].startswith("The adaptive attack defeats") == (
        drop >= 0.2
    )
    rise = max(v["ac_adaptive"] - v["ac_blended"], v["ss_adaptive"] - v["ss_blended"])
    assert ("It even raises" in v["adaptive_sentence"]) == (rise >= 0.2)
    assert v["sep_sentence"].startswith("The adaptive attack lowers") == (
        v["sep_adaptive"] < v["sep_blended"]
    )
    assert v["n_seeds"] == 1
    # Confusion Training beside them: scored like them, its sentence follows the numbers
    for name in ("ct_blended", "ct_adaptive", "ct_adaptive_recall"):
        assert _fraction(v[name]), name
    better = v["ct_adaptive"] > max(v["ac_adaptive"], v["ss_adaptive"])
    assert v["ct_sentence"].startswith("Confusion Training finds") == better
    # where it lost the poisons: both attacks at the one seed, a stage named
    assert v["ct_stages_sentence"].startswith("On blended, over 1 run, the last")
    assert v["ct_stages_adaptive"].startswith("On adaptive_blend, over 1 run,")
    assert (
        v["ct_stages_sentence"]
        == v["ct_stages_blended"] + " " + v["ct_stages_adaptive"]
    )
    assert v["ct_ratio_threshold"] == 2.0 and v["ct_max_ratio"] == 1.5
    # the target against the genuine label with the largest ratio, counted per label
    assert v["ct_other_label"] != v["target_label"]
    for name in ("target", "other"):
        assert 0 <= v[f"ct_{name}_poisons"] <= v[f"ct_{name}_isolated"]
        assert v[f"ct_{name}_isolated"] <= v[f"ct_{name}_images"]
        assert v[f"ct_{name}_ratio"] > 0.0
    assert v["ct_other_poisons"] == 0  # the poisons all carry the target label


@group("10_certified_defense")
def test_certified_defense_certifies_and_scores_the_pixel_attack(chapter):
    v = chapter("10_certified_defense")
    # at this scale (3,000 images, 30 partitions of 100) the ensemble learns MNIST but
    # certifies only small budgets; the certificate's arithmetic is unit-tested
    assert v["dpa_clean_acc"] > 0.6 and v["dpa_active"] == 30
    assert 0 <= v["dpa_median"] <= 15  # at most half the votes can move
    assert _fraction(v["dpa_asr"]) and _fraction(v["dpa_certified_changes"])
    assert v["dpa_certified_changes"] <= v["dpa_certified_poisons"]
    assert v["n_changes"] == 2 * v["n_poison"] > 0
    # the second partition count: its own ensemble, 50 images a partition
    assert v["dpa_counts_text"].startswith("at k = 30 (about 100 images a partition)")
    assert "; at k = 60 (about 50 images a partition)" in v["dpa_counts_text"]
