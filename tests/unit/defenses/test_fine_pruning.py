"""Fine-pruning (defenses.fine_pruning): its ranking, stopping rule and fine-tune."""

from types import SimpleNamespace

import pytest
import torch

from backdoor_utils import defenses
from tests.unit.defenses.helpers import (
    recording_trainer,
    reversed_triggers,
    uses_planted,
)


def test_prune_count_stops_at_the_first_drop_beyond_the_budget():
    # a non-monotone curve: accuracy recovers after the first big drop; Liu et al. stop
    # there
    curve = [0.99, 0.985, 0.98, 0.90, 0.97, 0.975, 0.96]
    assert defenses.choose_prune_count(curve, max_val_drop=0.04) == 2
    assert (
        defenses.choose_prune_count([0.99, 0.98, 0.97], max_val_drop=0.04) == 2
    )  # never exceeded


@uses_planted
def test_shared_conv_metrics_equal_the_full_evaluation_of_pruned_variants(
    planted, splits
):
    model, trigger = planted["backdoored"], planted["trigger"]
    splits = SimpleNamespace(
        x_test=splits.x_test[:2000],
        y_test=splits.y_test[:2000],
        x_val=splits.x_val,
        y_val=splits.y_val,
    )
    defender = defenses.DefenderData(
        splits.x_val[:500], splits.y_val[:500], splits.x_val[-500:], splits.y_val[-500:]
    )
    shared = defenses.SharedConvMetrics.of_defense(model, defender, splits, trigger, 0)
    ranking = defenses.channel_ranking(model, defender.x_tune)
    variants = [
        model,
        defenses.pruned(model, ranking[:40]),
        defenses.pruned(model, ranking[:62]),
        defenses.fc_pruned(model, 0.95),
    ]
    for variant in variants:
        full = defenses.defense_metrics(variant, defender, splits, trigger, 0)
        assert shared(variant) == pytest.approx(full, abs=1e-9)
    assert shared(variants[2]) != shared(model)  # 62 pruned channels change the numbers
    assert defenses.validation_curve(model, ranking, defender)[40] == pytest.approx(
        shared(variants[1])["val_acc"]
    )
    tuned = defenses.fine_tune(model, defender, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="conv layers differ"):
        shared(tuned)


def test_fine_pruning_ranks_channels_from_least_to_most_active_on_clean_images():
    # a last conv layer with zero weights outputs its bias everywhere: channel c's mean
    # clean activation is relu(bias[c]), so the ranking is known - dormant
    # (negative-bias) channels first
    from backdoor_utils.core.models import SimpleCNN

    model = SimpleCNN()
    bias = torch.linspace(-0.3, 0.6, 64)[
        torch.randperm(64, generator=torch.Generator().manual_seed(0))
    ]
    with torch.no_grad():
        model.conv2.weight.zero_()
        model.conv2.bias.copy_(bias)
    x = torch.rand(32, 1, 28, 28)
    assert torch.allclose(
        defenses.mean_channel_activation(model, x), bias.clamp_min(0), atol=1e-6
    )
    ranking = defenses.channel_ranking(model, x)
    dormant = int((bias <= 0).sum())  # tied at 0: any order among themselves
    assert set(ranking[:dormant].tolist()) == set(
        torch.nonzero(bias <= 0).flatten().tolist()
    )
    assert torch.equal(ranking[dormant:], torch.argsort(bias)[dormant:])
    assert torch.equal(
        defenses.pruned(model, ranking[:5]).channel_mask == 0,
        torch.isin(torch.arange(64), ranking[:5]),
    )


def test_fine_tuning_trains_on_the_defenders_tuning_images_never_its_selection_images():
    g = torch.Generator().manual_seed(0)
    data = defenses.DefenderData(
        torch.rand(40, 1, 28, 28, generator=g),
        torch.randint(0, 10, (40,), generator=g),
        torch.rand(10, 1, 28, 28, generator=g),
        torch.randint(0, 10, (10,), generator=g),
    )
    seen = {}
    defenses.fine_tune(SimpleNamespace(), data, epochs=3, train=recording_trainer(seen))
    assert (
        torch.equal(seen["x"], data.x_tune)
        and torch.equal(seen["y"], data.y_tune)
        and seen["epochs"] == 3
    )


def _same_weights(a, b) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(
        torch.equal(first[k], second[k]) for k in first
    )


@uses_planted
def test_a_cached_fine_tune_is_the_fine_tune_and_is_keyed_on_the_starting_weights(
    planted, splits, tmp_path, monkeypatch
):
    from backdoor_utils.core import cache
    from backdoor_utils.orchestration import experiments

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    trained = []
    real = experiments.train_model
    monkeypatch.setattr(
        experiments,
        "train_model",
        lambda *a, **k: trained.append(k["desc"]) or real(*a, **k),
    )
    model = planted["backdoored"]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    defender = defenses.DefenderData(
        splits.x_val[:300], splits.y_val[:300], splits.x_val[-300:], splits.y_val[-300:]
    )
    pruned = defenses.pruned(
        model, defenses.channel_ranking(model, defender.x_tune)[:20]
    )
    tune = dict(epochs=1, seed=0, device="cpu")
    cached = defenses.fine_tune(
        pruned, defender, **tune, train=experiments.train_on_data_cached
    )
    assert _same_weights(
        cached, defenses.fine_tune(pruned, defender, **tune)
    )  # what training gives
    again = defenses.fine_tune(
        pruned, defender, **tune, train=experiments.train_on_data_cached
    )
    assert trained == ["fine-tuning"] and _same_weights(
        again, cached
    )  # the second from the cache
    assert (
        again.channel_mask.sum() == 44
    )  # pruned channels stay pruned through the cache
    unpruned = defenses.fine_tune(
        model, defender, **tune, train=experiments.train_on_data_cached
    )
    assert len(trained) == 2 and not _same_weights(
        unpruned, cached
    )  # the starting weights are in the key
    assert all(
        torch.equal(v, start[k]) for k, v in model.state_dict().items()
    )  # the start is not changed
    nc = defenses.get("neural_cleanse", unlearn_epochs=1)
    flagged = defenses.cleanse_report(
        reversed_triggers([1.0] + [50.0 + c for c in range(9)], [True] * 10)
    )
    corner = torch.zeros(28, 28)
    corner[-4:, -4:] = 1
    flagged.triggers[0].mask = flagged.triggers[0].pattern = (
        corner  # a white corner (a blank trigger stamps nothing)
    )
    unlearned = nc.unlearn_flagged(
        model, flagged, defender, device="cpu", train=experiments.train_on_data_cached
    )
    assert _same_weights(
        unlearned, nc.unlearn_flagged(model, flagged, defender, device="cpu")
    )
    nc.unlearn_flagged(
        model, flagged, defender, device="cpu", train=experiments.train_on_data_cached
    )
    assert trained == ["fine-tuning", "fine-tuning", "unlearning"]


@uses_planted
def test_fine_pruning_defense_prunes_by_liu_et_als_rule_then_fine_tunes(
    planted, splits
):
    model = planted["backdoored"]
    defender = defenses.DefenderData(
        splits.x_val[:500], splits.y_val[:500], splits.x_val[-500:], splits.y_val[-500:]
    )
    repair = defenses.get("fine_pruning", max_val_drop=0.04, finetune_epochs=1).repair(
        model, defender, device="cpu"
    )
    ranking = defenses.channel_ranking(model, defender.x_tune)
    n = defenses.choose_prune_count(
        defenses.validation_curve(model, ranking, defender), 0.04
    )
    assert repair.details["n_pruned"] == n > 0
    assert (
        repair.model.channel_mask[ranking[:n]] == 0
    ).all() and repair.model.channel_mask.sum() == 64 - n
    assert not torch.equal(
        repair.model.classifier.weight, model.classifier.weight
    )  # fine-tuned
