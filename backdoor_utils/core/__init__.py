"""The core: verified MNIST, the model, training and evaluation, the metrics, the cache
and its keys, parameter checks. Knows no attack, detector or defense."""
