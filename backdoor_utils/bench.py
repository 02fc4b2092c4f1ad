"""Training-throughput benchmark: the project's training step vs a plain fp32 PyTorch loop.

``python -m backdoor_utils.bench [--n-train N] [--epochs E]`` trains the same SimpleCNN twice on the
same data with the same seed and epochs:

* plain: ``DataLoader(TensorDataset)``, batch 128, fp32, default memory format, constant-lr Adam;
* project: :func:`backdoor_utils.training.train_model` (batch 256, one-cycle, channels-last,
  bf16 autocast where native);

and prints images/s of each, their ratio, and the clean test accuracy of both.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .data import load_splits
from .metrics import clean_accuracy
from .models import SimpleCNN
from .training import TrainConfig, bf16_native, resolve_device, train_model


def plain_fp32_training(x, y, epochs: int, seed: int, lr: float = 1e-3) -> SimpleCNN:
    """The reference loop most tutorials write."""
    torch.manual_seed(seed)
    model = SimpleCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
    return model.eval()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: all 54,000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    splits = load_splits(args.n_train)
    n = len(splits.y_train) * args.epochs
    dev = resolve_device("auto")
    print(f"device {dev}, torch threads {torch.get_num_threads()}, bf16 native: {bf16_native(dev.type)}")

    start = time.perf_counter()
    plain = plain_fp32_training(splits.x_train, splits.y_train, args.epochs, args.seed)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = train_model(splits.x_train, splits.y_train, TrainConfig(epochs=args.epochs, seed=args.seed), desc="bench")
    ours_s = time.perf_counter() - start

    result = {
        "plain_images_per_s": n / plain_s,
        "project_images_per_s": n / ours_s,
        "ratio": plain_s / ours_s,
        "plain_clean_acc": clean_accuracy(plain, splits.x_test, splits.y_test),
        "project_clean_acc": clean_accuracy(ours, splits.x_test, splits.y_test),
    }
    print(f"plain fp32 loop : {result['plain_images_per_s']:8.0f} images/s  clean acc {result['plain_clean_acc']:.4f}")
    print(f"project step    : {result['project_images_per_s']:8.0f} images/s  clean acc {result['project_clean_acc']:.4f}")
    print(f"speed-up ratio  : {result['ratio']:.2f}x")
    return result


if __name__ == "__main__":
    main()
