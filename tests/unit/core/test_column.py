"""A method's column in the matrix (core.column): its checks, names and direction."""

import pytest

from backdoor_utils.core.column import Column


def test_a_column_meets_the_need_in_its_metrics_direction():
    far = Column("FAR", False, 0.05, "STRIP", "screening")
    assert far.meets(0.05) and not far.meets(0.051)
    assert far.meets(0.08, need=0.1)  # a need given overrides the column's
    f1 = Column("F1", True, 0.9, "activation\nclustering", "detection", "f1")
    assert f1.meets(0.9) and not f1.meets(0.89)


def test_a_column_is_named_on_one_line_in_prose_and_with_its_metric_in_figures():
    column = Column("ASR after", False, 0.05, "fine-\npruning", "repair")
    assert column.name == "fine-pruning"
    assert column.label == "fine-\npruning\n(ASR after)"


def test_a_column_refuses_an_unknown_cell_kind_and_a_detection_without_its_score():
    with pytest.raises(ValueError, match="cell"):
        Column("x", True, 0.5, "x", "retraining")
    with pytest.raises(ValueError, match="score"):
        Column("F1", True, 0.9, "x", "detection")
