"""Stand-in models whose behaviour the tests know exactly."""

import torch


class PixelFeatures(torch.nn.Module):
    """A model whose layers are the image's own pixels: the penultimate layer the first
    32, the pooled conv features pixels 32-63, the last conv layer (before pooling)
    pixels 64-127 - so a test puts a poison's signature in one layer only."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Linear(1, 1)

    def penultimate_activations(self, x):
        return x.flatten(1)[:, :32]

    def conv_features(self, x):
        return x.flatten(1)[:, 32:64].reshape(len(x), 2, 4, 4)

    def last_conv_activations(self, x):
        return x.flatten(1)[:, 64:128].reshape(len(x), 4, 4, 4)
