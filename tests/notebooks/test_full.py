"""The book's targets at full parameters (``make test-full``; about an hour on 2 CPU cores).

Each chapter runs with its defaults into ``runs/full/``; trained models come from the shared cache.
A failing assertion here is a missed target: report it with the measured number.
"""

from pathlib import Path

import pytest

from backdoor_utils.cli import execute
from tests.notebooks.test_static import ROOT

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def full():
    cache = {}

    def run(stem):
        if stem not in cache:
            cache[stem] = execute(ROOT / "notebooks" / f"{stem}.ipynb", {}, ROOT / "runs" / "full" / f"{stem}.ipynb")
        return cache[stem]

    return run


def test_01_pixel_targets(full):
    v = full("01_pixel_trigger")
    assert v["clean_acc_baseline"] >= 0.990
    assert v["asr"] >= 0.995
    assert v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_02_noise_targets(full):
    v = full("02_noise_trigger")
    assert v["psnr_db"] >= 35 and v["asr"] >= 0.98
    assert v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_03_blur_targets(full):
    v = full("03_blur_trigger")
    assert v["asr"] >= 0.98 and v["clean_acc"] >= v["clean_acc_baseline"] - 0.005


def test_04_learned_targets(full):
    v = full("04_learned_trigger")
    assert v["asr"] >= 0.995 and v["clean_acc"] >= v["clean_acc_baseline"] - 0.003


def test_05_detection_targets(full):
    v = full("05_activation_clustering")
    assert v["f1"] >= 0.95
    assert v["f1_min"] >= 0.95  # every seed and target of the robustness runs
    assert v["clean_flagged_fraction"] <= 0.01
    assert v["asr_after"] <= 0.05 and v["clean_acc_after"] >= 0.985


def test_06_defense_targets(full):
    v = full("06_fine_pruning")
    assert v["nc_flagged_label"] == 0 and v["nc_anomaly_index"] > 2
    assert v["nc_clean_flagged_count"] == 0
    assert v["nc_asr_after"] <= 0.05
    assert v["nc_clean_acc_after"] >= v["clean_acc_before"] - 0.01
