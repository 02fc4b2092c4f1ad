"""The defender's data and the defenses' registry (defenses.base)."""

from types import SimpleNamespace

import pytest
import torch

from backdoor_utils import defenses


def test_the_defender_tunes_and_selects_on_disjoint_parts_of_the_clean_validation_split_only():
    # every image carries its origin in its pixels: split code 1 / 2 / 3, then its index
    def images(code, n):
        return torch.stack(
            [torch.full((1, 28, 28), code + i / 10_000) for i in range(n)]
        )

    splits = SimpleNamespace(
        x_train=images(1, 3000),
        y_train=torch.zeros(3000, dtype=torch.long),
        x_val=images(2, 600),
        y_val=torch.arange(600) % 10,
        x_test=images(3, 1000),
        y_test=torch.arange(1000) % 10,
    )
    defender = defenses.defender_data(splits, n_tune=400, n_select=150)
    tune, select = defender.x_tune[:, 0, 0, 0], defender.x_select[:, 0, 0, 0]
    assert len(tune) == 400 and len(select) == 150
    assert ((tune >= 2) & (tune < 3)).all() and (
        (select >= 2) & (select < 3)
    ).all()  # validation images only
    assert not set(tune.tolist()) & set(
        select.tolist()
    )  # never the same image for both
    index = ((torch.cat([tune, select]) - 2) * 10_000).round().long()
    assert torch.equal(
        torch.cat([defender.y_tune, defender.y_select]), splits.y_val[index]
    )  # labels follow
    with pytest.raises(ValueError, match="n_clean_finetune"):
        defenses.defender_data(splits, n_tune=500, n_select=150)


def test_defenses_and_detectors_are_found_by_name_and_check_their_parameters():
    from backdoor_utils import detectors

    assert set(defenses.names()) >= {"fine_pruning", "neural_cleanse"}
    assert "activation_clustering" in detectors.names()
    with pytest.raises(ValueError, match="defense: must be one of 'fine_pruning'"):
        defenses.get("laser")
    with pytest.raises(ValueError, match="max_val_drop: must be a number > 0"):
        defenses.get("fine_pruning", max_val_drop=0)
    with pytest.raises(ValueError, match="reduction: must be one of 'ica', 'pca'"):
        detectors.get("activation_clustering", reduction="tsne")
