"""Training-throughput benchmark: the project's training step against two reference
loops.

``python -m backdoor_utils.bench [--n-train N] [--epochs E]`` trains the same SimpleCNN
three times on the same data with the same seed and epochs:

* plain: ``DataLoader(TensorDataset)``, batch 128, fp32, default memory format,
  constant-lr Adam - the loop most tutorials write;
* tight: the project's recipe (Adam, one-cycle, batch 256, channels-last, bf16 autocast
  where native) written as a minimal loop - the data shuffled once per epoch, batches
  sliced from it;
* project: :func:`backdoor_utils.training.train_model`, what every chapter calls;

and prints images/s of each, the project step's share of the tight loop's throughput,
its speed-up over the plain loop, the clean test accuracy of all three, and the
precision they trained in - bf16 autocast where the hardware computes bf16 natively,
fp32 elsewhere, or what ``BACKDOOR_BF16`` forces (then no speed-up target applies: a
forced precision is not the hardware's). It then holds the project step's arithmetic
rate (FLOP an image, counted by ``torch.utils.flop_counter``, times images/s) against a
large matrix product's in the same precision on the same hardware - how near the step is
to what the hardware's tuned BLAS does - and says what a full model costs at each rate.
Last it times evaluation (:func:`~backdoor_utils.training.predict` over the test set) at
the project's batch (``EVAL_BATCH``) and at 2048, the batch the project used before:
every ASR, every STRIP blend and every activation the detectors read goes through it.

``python -m backdoor_utils.bench --compare-epochs 5 3 2`` instead trains the settings of
:data:`EPOCH_STUDY` at each epoch count (cached like every chapter's models) and prints
their clean accuracy and ASR side by side: the evidence for or against training fewer
epochs to save time.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from .. import MALLOC_TUNED
from ..core.checks import integer, list_of
from ..core.data import TRAINING_SIZE, load_splits
from ..orchestration.experiments import Experiment, run_attack
from ..core.metrics import clean_accuracy
from ..core.models import SimpleCNN
from .sentences import computed_with, precision_forced
from ..core.training import (
    EVAL_BATCH,
    TrainConfig,
    bf16_native,
    predict,
    resolve_device,
    train_model,
    training_precision,
)


def plain_fp32_training(x, y, epochs: int, seed: int, lr: float = 1e-3) -> SimpleCNN:
    """The reference loop most tutorials write."""
    torch.manual_seed(seed)
    model = SimpleCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
    return model.eval()


def tight_recipe_training(x, y, config: TrainConfig) -> SimpleCNN:
    """The project's recipe with nothing else: same model, optimiser, schedule, batch
    and precision."""
    dev = resolve_device("auto")
    torch.manual_seed(config.seed)
    model = SimpleCNN().to(dev).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay
    )
    steps = (len(y) + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, epochs=config.epochs, steps_per_epoch=steps
    )
    use_bf16 = bf16_native(dev.type)
    x, y = x.to(dev), y.to(dev)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator).to(dev)
        xs, ys = x[order].contiguous(memory_format=torch.channels_last), y[order]
        for start in range(0, len(y), config.batch_size):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = F.cross_entropy(
                    model(xs[start : start + config.batch_size]),
                    ys[start : start + config.batch_size],
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def _timed(fn):
    start = time.perf_counter()
    model = fn()
    return model, time.perf_counter() - start


def evaluation_speed(
    model: SimpleCNN, x: torch.Tensor, batch_sizes, repeats: int = 3
) -> dict:
    """Images/s of :func:`predict` over ``x`` at each batch size (best of ``repeats``),
    and whether every batch size gave the same predictions."""
    out, reference = {}, None
    for batch_size in batch_sizes:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            preds = predict(model, x, batch_size=batch_size)
            best = min(best, time.perf_counter() - start)
        reference = preds if reference is None else reference
        out[batch_size] = {
            "images_per_s": len(x) / best,
            "same_predictions": bool(torch.equal(preds, reference)),
        }
    return out


#: The chapters' training set: MNIST's 60,000 training images less the held-out
#: validation split.


def step_flops_per_image(batch_size: int = 256) -> float:
    """Floating-point operations of one training step's forward and backward pass, per
    image, as ``torch.utils.flop_counter`` counts them: the convolutions and matrix
    products, which are nearly all of the arithmetic (elementwise operations, pooling
    and the optimiser are not counted).
    """
    model = SimpleCNN()
    x, y = torch.zeros(batch_size, 1, 28, 28), torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch_size


def matmul_rate(
    device: torch.device, dtype: torch.dtype, size: int = 4096, repeats: int = 3
) -> float:
    """GFLOP/s of one ``size`` x ``size`` matrix product on ``device`` in ``dtype``
    (best of ``repeats``, after one warm-up): what the hardware's tuned BLAS reaches,
    the practical ceiling for a training step's arithmetic on that hardware."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for attempt in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        best = min(best, seconds) if attempt else best
    return 2 * size**3 / best / 1e9


def _arithmetic(
    images_per_s: float, device: torch.device, precision: str, size: int
) -> dict:
    """The project step's arithmetic rate against a large matrix product's in the same
    precision on the same hardware, and what a full model (the chapters' TRAINING_SIZE x
    5 epochs) costs at each.
    """
    flops = step_flops_per_image()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out = {
        "flops_per_image": flops,
        "step_gflops": images_per_s * flops / 1e9,
        "matmul_gflops": matmul_rate(device, dtype, size),
    }
    out["share_of_matmul"] = out["step_gflops"] / out["matmul_gflops"]
    n_full, epochs = TRAINING_SIZE, TrainConfig().epochs
    full = n_full * epochs * flops / 1e9
    print(
        f"arithmetic           : {flops / 1e6:.1f} MFLOP an image (forward and"
        f" backward); the project step runs {out['step_gflops']:.0f} GFLOP/s,"
        f" {out['share_of_matmul']:.0%} of a {size} x {size} {precision} matrix product"
        f" on this hardware ({out['matmul_gflops']:.0f} GFLOP/s)"
    )
    print(
        f"a full model         : {full / 1e3:.2f} TFLOP ({n_full:,} images x {epochs}"
        f" epochs): {full / out['step_gflops']:.0f} s at the project step,"
        f" {full / out['matmul_gflops']:.0f} s at the matrix product's rate"
    )
    return out


#: Where fewer epochs would show first: chapter 01's scarcest poison rates and its
#: default, chapter 02's noise budgets around its threshold, chapter 03's blur, and the
#: clean model.
EPOCH_STUDY = (
    ("clean model", Experiment("none")),
    ("pixel 3x3, rate 0.0005", Experiment("patch", poison_rate=0.0005, patch_size=3)),
    ("pixel 3x3, rate 0.001", Experiment("patch", poison_rate=0.001, patch_size=3)),
    ("pixel 3x3, rate 0.01", Experiment("patch", poison_rate=0.01, patch_size=3)),
    ("noise 8/255, rate 0.01", Experiment("noise", eps=8 / 255)),
    ("noise 10/255, rate 0.01", Experiment("noise", eps=10 / 255)),
    ("noise 16/255, rate 0.01", Experiment("noise", eps=16 / 255)),
    ("blur sigma 1, rate 0.01", Experiment("blur", blur_kernel=5, blur_sigma=1.0)),
)


def epochs_study(epochs=(5, 3, 2), n_train: int | None = None, settings=EPOCH_STUDY):
    """Clean accuracy and ASR of every ``(name, Experiment)`` in ``settings`` trained
    for each number of ``epochs`` (models cached as in the chapters): one row per
    setting and epoch count, with the seconds to train and evaluate it where it was
    trained here (NaN: from the cache).
    """
    import pandas as pd

    rows = []
    for name, exp in settings:
        for count in epochs:
            start = time.perf_counter()
            result = run_attack(exp.with_(epochs=count, n_train=n_train))
            rows.append(
                {
                    "setting": name,
                    "epochs": count,
                    "clean_acc": result.clean_acc,
                    "asr": result.asr,
                    "seconds": (
                        float("nan")
                        if result.from_cache
                        else time.perf_counter() - start
                    ),
                }
            )
    return pd.DataFrame(rows)


def speedup_target(result: dict) -> str:
    """The target the speed-up over the plain loop is held to: 2.5x where the hardware
    trains in bf16, 1.5x where it trains in fp32 - none when BACKDOOR_BF16 forces a
    precision (forcing bf16 on a CPU without it measures emulated bf16, which is slower
    than fp32; forcing fp32 on a bf16 CPU measures what the project would not do there).
    """
    if result["precision_forced"]:
        return (
            "no target: BACKDOOR_BF16 forces the precision; the targets are for the"
            " hardware's own"
        )
    if result["precision"] == "bf16":
        return "target >= 2.5x where bf16 is native"
    return "target >= 1.5x without native bf16"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help=f"training images (default: all {TRAINING_SIZE:,})",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=4096,
        help="side of the square matrix product timed as the hardware's ceiling",
    )
    parser.add_argument(
        "--compare-epochs",
        type=int,
        nargs="+",
        metavar="E",
        help="instead of timing, train EPOCH_STUDY's settings at each E and compare",
    )
    args = parser.parse_args(argv)
    try:  # the project's parameter rules, before any data is loaded
        if args.n_train is not None:
            integer(1, TRAINING_SIZE)("--n-train", args.n_train)
        integer(1)("--epochs", args.epochs)
        integer(1)("--matmul-size", args.matmul_size)
        if args.compare_epochs:
            list_of(integer(1))("--compare-epochs", args.compare_epochs)
    except ValueError as error:
        parser.error(str(error))
    if args.compare_epochs:
        table = epochs_study(args.compare_epochs, args.n_train)
        wide = table.pivot(
            index="setting", columns="epochs", values=["clean_acc", "asr"]
        )
        wide = wide.loc[
            [name for name, _ in EPOCH_STUDY],
            [
                (metric, count)
                for metric in ("clean_acc", "asr")
                for count in args.compare_epochs
            ],
        ]
        print(wide.to_string(float_format="{:.4f}".format))
        trained = table.dropna(subset=["seconds"])
        print(
            "seconds to train and evaluate one model (median of those trained in this"
            " run):",
            (
                trained.groupby("epochs").seconds.median().round(1).to_dict()
                if len(trained)
                else "none trained"
            ),
        )
        return {"epochs_study": table}
    splits = load_splits(args.n_train)
    n = len(splits.y_train) * args.epochs
    dev = resolve_device("auto")
    print(
        f"Computed on {computed_with('auto')}; "
        f"malloc keeps freed blocks (runtime.tune_malloc): {MALLOC_TUNED}"
    )

    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    x, y = splits.x_train, splits.y_train
    runs = {
        "plain fp32 loop": _timed(
            lambda: plain_fp32_training(x, y, args.epochs, args.seed)
        ),
        "tight recipe loop": _timed(lambda: tight_recipe_training(x, y, config)),
        "project train_model": _timed(lambda: train_model(x, y, config, desc="bench")),
    }
    result = {
        "precision": training_precision(dev.type),
        "precision_forced": precision_forced(),
        "threads": torch.get_num_threads(),
        "malloc_tuned": MALLOC_TUNED,
    }
    for name, (model, seconds) in runs.items():
        acc = clean_accuracy(model, splits.x_test, splits.y_test)
        result[name] = {
            "images_per_s": n / seconds,
            "seconds": seconds,
            "clean_acc": acc,
        }
        print(
            f"{name:20s}: {n / seconds:8.0f} images/s  ({seconds:6.1f} s)  clean acc"
            f" {acc:.4f}"
        )
    project, tight, plain = (
        result[k]["images_per_s"]
        for k in ("project train_model", "tight recipe loop", "plain fp32 loop")
    )
    result["share_of_tight"] = project / tight
    result["speedup_over_plain"] = project / plain
    print(f"project / tight loop : {result['share_of_tight']:.0%} (target >= 90%)")
    print(
        f"project / plain loop : {result['speedup_over_plain']:.2f}x"
        f" ({speedup_target(result)})"
    )
    result.update(_arithmetic(project, dev, result["precision"], args.matmul_size))
    result["evaluation"] = evaluation_speed(
        runs["project train_model"][0], splits.x_test, (EVAL_BATCH, 2048)
    )
    for batch_size, row in result["evaluation"].items():
        print(
            f"evaluation, batch {batch_size:5d}: {row['images_per_s']:8.0f} images/s"
            f"{'' if row['same_predictions'] else '  (predictions differ!)'}"
        )
    return result


if __name__ == "__main__":
    main()
