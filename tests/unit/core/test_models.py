"""The SimpleCNN (core.models): shapes, the channel mask, the reference numbers."""

import torch

from backdoor_utils.core.models import SimpleCNN


def test_simplecnn_shapes_and_named_layers():
    model = SimpleCNN()
    x = torch.rand(7, 1, 28, 28)
    assert model(x).shape == (7, 10)
    assert model.penultimate_activations(x).shape == (7, 128)
    assert model.last_conv_activations(x).shape == (7, 64, 14, 14)
    assert model.penultimate.in_features == 3136 and model.conv2.out_channels == 64


def test_channel_mask_silences_pruned_channels():
    torch.manual_seed(
        0
    )  # unseeded, a freshly initialised channel is sometimes dead by chance
    model = SimpleCNN()
    model.channel_mask[[1, 5]] = 0
    acts = model.last_conv_activations(torch.rand(3, 1, 28, 28))
    assert acts[:, [1, 5]].abs().sum() == 0
    kept = [c for c in range(64) if c not in (1, 5)]
    assert (
        acts[:, kept].abs().sum(dim=(0, 2, 3)) > 0
    ).sum() > 32  # most other channels respond


def test_pooling_before_relu_and_mask_gives_the_reference_numbers():
    model = SimpleCNN()
    model.channel_mask[[0, 7, 33]] = 0
    x = torch.rand(16, 1, 28, 28)
    h = model.pool(torch.relu(model.conv1(x)))
    h = model.pool(torch.relu(model.conv2(h)) * model.channel_mask.view(1, -1, 1, 1))
    reference = model.classifier(torch.relu(model.penultimate(torch.flatten(h, 1))))
    assert torch.equal(model(x), reference)
