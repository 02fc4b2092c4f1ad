"""Scoring helpers: where the true poisons ended up, and why a detection run missed."""

import numpy as np
import torch

from backdoor_utils.detectors.activation_clustering import Detection, Reclassification
from backdoor_utils.evaluation import failure_reason, where_the_poisons_went


def _run(**overrides):
    run = {"f1": 0.0, "recall": 0.0, "n_flagged": 0, "n_poison_total": 540, "poisons_in_best_candidate": 0,
           "best_candidate_size": 0, "best_candidate_l": 0, "best_candidate_p": 0, "best_candidate_flagged": False}
    return {**run, **overrides}


def test_where_the_poisons_went_picks_the_candidate_holding_most_poisons():
    truth = torch.zeros(100, dtype=torch.bool)
    truth[:30] = True
    table = [{"size": 20, "l": 15, "p": 3, "flagged": False}, {"size": 40, "l": 4, "p": 9, "flagged": True}]
    members = [np.arange(50, 70), np.arange(5, 45)]  # 0 poisons, then 25 poisons
    found = Detection([], Reclassification(torch.zeros(100, dtype=torch.bool), table, None, members))
    went = where_the_poisons_went(found, truth)
    assert went["n_poison_total"] == 30 and went["poisons_in_best_candidate"] == 25
    assert (went["best_candidate_size"], went["best_candidate_l"], went["best_candidate_p"]) == (40, 4, 9)
    assert went["best_candidate_flagged"] is True


def test_failure_reason_names_what_went_wrong():
    assert failure_reason(_run(f1=0.95)) == ""
    split = failure_reason(_run(poisons_in_best_candidate=183))
    assert "no candidate cluster holds even half of the 540 poisons (the best holds 183)" in split
    kept = failure_reason(_run(poisons_in_best_candidate=511, best_candidate_size=511, best_candidate_l=123,
                               best_candidate_p=78))
    assert "511 of the 540 poisons form a cluster of 511" in kept and "other 29 poisons" in kept
    assert "l / p = 1.58 > T = 1 keeps the cluster" in kept
    mixed = failure_reason(_run(poisons_in_best_candidate=357, best_candidate_size=2165, best_candidate_l=1375,
                                best_candidate_p=500))
    assert "357 of the 540 poisons fall in a cluster of 2,165 images that are mostly genuine digits" in mixed
    assert "l / p = 2.75 > T = 1 keeps the cluster" in mixed
    noisy = failure_reason(_run(n_flagged=838, poisons_in_best_candidate=100))
    assert noisy.endswith("; 838 genuine images are flagged")
