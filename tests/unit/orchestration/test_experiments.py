"""Experiments (orchestration.experiments): a cached model computes what it did."""

import torch

from backdoor_utils.core.training import (
    TrainConfig,
    activations,
    train_model,
)


def test_a_model_loaded_from_the_cache_computes_exactly_what_the_trained_one_does(
    splits,
):
    from backdoor_utils.orchestration.experiments import model_from_state

    trained = train_model(
        splits.x_train[:512],
        splits.y_train[:512],
        TrainConfig(epochs=1, seed=1),
        device="cpu",
    )
    loaded = model_from_state(trained.state_dict(), "cpu")
    assert loaded.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    x = splits.x_test[:256]
    with torch.no_grad():
        assert torch.equal(trained(x), loaded(x))
    assert torch.equal(activations(trained, x), activations(loaded, x))
