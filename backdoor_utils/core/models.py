"""The study's SimpleCNN, with named layers for detection and pruning."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """conv(1->32) -> ReLU -> pool -> conv(32->64) -> ReLU -> pool -> fc(3136->128) ->
    ReLU -> fc(128->10).

    ``conv2`` is the last conv layer (fine-pruning ranks its 64 channels);
    ``penultimate`` is the 128-unit fc layer whose ReLU output activation clustering
    reads. ``channel_mask`` (a buffer of ones) multiplies the last conv layer's output:
    pruning a channel sets its entry to 0.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.penultimate = nn.Linear(64 * 7 * 7, 128)
        self.classifier = nn.Linear(128, num_classes)
        self.register_buffer("channel_mask", torch.ones(64))

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_mask.view(1, -1, 1, 1).to(x.dtype)

    def last_conv_activations(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU output of the last conv layer (before pooling), masked: [N, 64, 14,
        14]."""
        x = torch.relu(self.pool(self.conv1(x)))
        return self._mask(torch.relu(self.conv2(x)))

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ReLU output of the last conv layer, *before* the channel mask: [N, 64,
        7, 7].

        Max-pooling commutes with ReLU and with the 0/1 channel mask, so both are
        applied after pooling, on a quarter of the elements: the same numbers as conv ->
        ReLU -> mask -> pool.
        """
        x = torch.relu(self.pool(self.conv1(x)))
        return torch.relu(self.pool(self.conv2(x)))

    def head_activations(self, features: torch.Tensor) -> torch.Tensor:
        """The penultimate layer's ReLU output from :meth:`conv_features`: mask -> fc ->
        ReLU."""
        return torch.relu(self.penultimate(torch.flatten(self._mask(features), 1)))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`conv_features`: models that differ only in the channel
        mask or the fc layers share their conv features, so their heads can be evaluated
        on one set of them.
        """
        return self.classifier(self.head_activations(features))

    def penultimate_activations(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU output of the 128-unit penultimate layer: [N, 128]."""
        return self.head_activations(self.conv_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_features(x))
