"""The training bench (tooling.bench)."""

import torch

from backdoor_utils.core.training import (
    TrainConfig,
    bf16_native,
    train_model,
)


def test_project_step_computes_exactly_the_benchmarks_tight_recipe(splits):
    # the bench compares speed; this makes sure both loops train the same model
    from backdoor_utils.tooling.bench import tight_recipe_training

    x, y = splits.x_train[:768], splits.y_train[:768]
    config = TrainConfig(epochs=2, seed=4)
    ours = train_model(x, y, config, device="cpu")
    tight = tight_recipe_training(x, y, config)
    for a, b in zip(ours.state_dict().values(), tight.state_dict().values()):
        assert torch.equal(a, b)


def test_the_epochs_study_trains_each_setting_at_each_epoch_count(
    tmp_path, monkeypatch
):
    # the README's case against fewer epochs rests on this table: each row must be the
    # model of its own epoch count, with that model's numbers
    from backdoor_utils.core import cache
    from backdoor_utils.tooling.bench import epochs_study
    from backdoor_utils.orchestration.experiments import Experiment, run_attack

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    settings = (
        ("clean", Experiment("none")),
        ("pixel", Experiment("patch", poison_rate=0.05, patch_size=3)),
    )
    table = epochs_study((1, 2), n_train=1000, settings=settings)
    assert list(zip(table.setting, table.epochs)) == [
        ("clean", 1),
        ("clean", 2),
        ("pixel", 1),
        ("pixel", 2),
    ]
    assert table.seconds.gt(0).all()  # all four trained here
    for row in table.itertuples():
        exp = dict(settings)[row.setting].with_(epochs=row.epochs, n_train=1000)
        again = run_attack(exp)
        assert again.from_cache and again.clean_acc == row.clean_acc
        assert (row.asr != row.asr) if again.asr is None else again.asr == row.asr
    assert (
        table.clean_acc.iloc[0] != table.clean_acc.iloc[1]
    )  # one and two epochs: two models


def test_the_bench_says_which_precision_it_measured_and_which_target_applies(
    monkeypatch, capsys, splits
):
    # a forced precision (BACKDOOR_BF16) is not the hardware's: the bench says so and
    # sets no target
    import dataclasses

    from backdoor_utils.tooling import bench

    small = dataclasses.replace(
        splits,
        x_train=splits.x_train[:256],
        y_train=splits.y_train[:256],
        x_test=splits.x_test[:512],
        y_test=splits.y_test[:512],
    )
    monkeypatch.setattr(bench, "load_splits", lambda n_train: small)
    assert bench.speedup_target(
        {"precision": "bf16", "precision_forced": False}
    ).startswith("target >= 2.5x")
    assert bench.speedup_target(
        {"precision": "fp32", "precision_forced": False}
    ).startswith("target >= 1.5x")
    for precision in ("bf16", "fp32"):
        assert bench.speedup_target(
            {"precision": precision, "precision_forced": True}
        ).startswith("no target")
    bf16_native.cache_clear()
    monkeypatch.setenv("BACKDOOR_BF16", "0")
    try:
        result = bench.main(["--epochs", "1", "--matmul-size", "256"])
    finally:
        bf16_native.cache_clear()
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].startswith("Computed on the ")
        and "in fp32 (as BACKDOOR_BF16 sets)" in lines[0]
    )
    assert (result["precision"], result["precision_forced"]) == ("fp32", True)
    assert any(
        line.startswith("project / plain loop") and "no target" in line
        for line in lines
    )
    # the step's arithmetic rate and the hardware's ceiling it is held against, same run
    assert (
        result["step_gflops"]
        == result["project train_model"]["images_per_s"]
        * result["flops_per_image"]
        / 1e9
    )
    assert result["share_of_matmul"] == result["step_gflops"] / result["matmul_gflops"]
    assert any(
        line.startswith("arithmetic") and "fp32 matrix product" in line
        for line in lines
    )
    assert any(
        line.startswith("a full model")
        and "6.75 TFLOP (54,000 images x 5 epochs)" in line
        for line in lines
    )


def test_the_bench_counts_a_training_step_as_its_forward_and_backward_arithmetic():
    # 2 FLOP a multiply-add; the backward pass computes the weights' gradient of every
    # layer and the input's gradient of every layer but the first (the images need none)
    from backdoor_utils.tooling.bench import step_flops_per_image

    conv1 = 2 * 28 * 28 * 32 * 1 * 9
    conv2 = 2 * 14 * 14 * 64 * 32 * 9
    fc1, fc2 = 2 * 3136 * 128, 2 * 128 * 10
    assert (
        step_flops_per_image(batch_size=8)
        == 2 * conv1 + 3 * (conv2 + fc1 + fc2)
        == 24_995_328
    )


def test_the_matrix_product_rate_counts_two_flop_a_multiply_add_over_the_fastest_timed_run(
    monkeypatch,
):
    # a clock that makes the warm-up the fastest run (not to be counted) and the timed
    # ones 4, 2, 3 s
    import itertools

    from backdoor_utils.tooling import bench

    ticks = itertools.accumulate([0, 1, 0, 4, 0, 2, 0, 3])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    assert (
        bench.matmul_rate(torch.device("cpu"), torch.float32, size=64, repeats=3)
        == 2 * 64**3 / 2 / 1e9
    )


def test_the_bench_holds_bf16_training_against_a_bf16_matrix_product(monkeypatch):
    from backdoor_utils.tooling import bench

    seen = []
    monkeypatch.setattr(
        bench, "matmul_rate", lambda device, dtype, size: seen.append(dtype) or 100.0
    )
    for precision in ("bf16", "fp32"):
        out = bench._arithmetic(1000.0, torch.device("cpu"), precision, 64)
        assert (
            out["step_gflops"] == 1000.0 * 24_995_328 / 1e9
            and out["share_of_matmul"] == out["step_gflops"] / 100
        )
    assert seen == [torch.bfloat16, torch.float32]


def test_the_bench_refuses_bad_arguments_before_loading_or_training_anything(
    monkeypatch, capsys
):
    import pytest

    from backdoor_utils.tooling import bench

    monkeypatch.setattr(
        bench,
        "load_splits",
        lambda n_train: pytest.fail("loaded data for a bad argument"),
    )
    monkeypatch.setattr(
        bench, "epochs_study", lambda *a, **k: pytest.fail("trained for a bad argument")
    )
    for argv, named in (
        (["--matmul-size", "0"], "--matmul-size: must be an integer >= 1, got 0"),
        (["--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
        (["--n-train", "0"], "--n-train: must be an integer >= 1 and <= 54000, got 0"),
        (
            ["--n-train", "54001"],
            "--n-train: must be an integer >= 1 and <= 54000, got 54001",
        ),
        (
            ["--compare-epochs", "5", "0"],
            "--compare-epochs[1]: must be an integer >= 1, got 0",
        ),
    ):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert named in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the help states the same range the check enforces
        bench.main(["--help"])
    assert "(default: all 54,000)" in " ".join(capsys.readouterr().out.split())
