import torch

from backdoor_utils.core.models import SimpleCNN
from backdoor_utils.core.training import (
    TrainConfig,
    activations,
    bf16_native,
    predict,
    train_model,
)


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


def test_training_is_deterministic_for_a_seed(splits):
    x, y = splits.x_train[:512], splits.y_train[:512]
    a = train_model(x, y, TrainConfig(epochs=1, seed=3), "cpu")
    b = train_model(x, y, TrainConfig(epochs=1, seed=3), "cpu")
    c = train_model(x, y, TrainConfig(epochs=1, seed=4), "cpu")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_short_training_learns_something(splits):
    model = train_model(splits.x_train, splits.y_train, TrainConfig(epochs=4), "cpu")
    acc = float(
        (predict(model, splits.x_test[:2000]) == splits.y_test[:2000]).float().mean()
    )
    assert acc > 0.8


def test_activations_shapes():
    model = SimpleCNN()
    x = torch.rand(5, 1, 28, 28)
    assert activations(model, x).shape == (5, 128)
    assert activations(model, x, layer="last_conv").shape == (5, 64, 14, 14)


def test_bf16_override_is_respected(monkeypatch):
    bf16_native.cache_clear()
    monkeypatch.setenv("BACKDOOR_BF16", "0")
    assert bf16_native("cpu") is False
    bf16_native.cache_clear()
    monkeypatch.setenv("BACKDOOR_BF16", "1")
    assert bf16_native("cpu") is True
    bf16_native.cache_clear()


class _CloseLogits(SimpleCNN):
    """Class 1's weights are class 0's times (1 + 2e-3): fp32 tells them apart, bf16
    (8-bit mantissa, relative step 2^-8) rounds both to the same number."""

    def __init__(self):
        super().__init__()
        w = torch.rand(784)
        self.w = torch.nn.Parameter(torch.stack([w, w * (1 + 2e-3)] + [w * 0.5] * 8))

    def forward(self, x):
        return torch.nn.functional.linear(torch.flatten(x, 1), self.w)


def test_evaluation_is_fp32_even_where_training_uses_bf16(monkeypatch):
    bf16_native.cache_clear()
    monkeypatch.setenv("BACKDOOR_BF16", "1")
    model = _CloseLogits().eval()
    x = torch.rand(64, 1, 28, 28)
    assert (predict(model, x) == 1).all()  # bf16 would tie the two logits and answer 0
    assert activations(SimpleCNN(), x).dtype == torch.float32
    bf16_native.cache_clear()


def test_training_leaves_the_callers_random_state_alone(splits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_model(
        splits.x_train[:256], splits.y_train[:256], TrainConfig(epochs=1, seed=7), "cpu"
    )
    assert torch.equal(torch.rand(3), expected)


def test_pooling_before_relu_and_mask_gives_the_reference_numbers():
    model = SimpleCNN()
    model.channel_mask[[0, 7, 33]] = 0
    x = torch.rand(16, 1, 28, 28)
    h = model.pool(torch.relu(model.conv1(x)))
    h = model.pool(torch.relu(model.conv2(h)) * model.channel_mask.view(1, -1, 1, 1))
    reference = model.classifier(torch.relu(model.penultimate(torch.flatten(h, 1))))
    assert torch.equal(model(x), reference)


def test_learned_trigger_is_trained_jointly_and_only_on_poisoned_samples(splits):
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    x, y = splits.x_train[:512], splits.y_train[:512].clone()
    poison = torch.zeros(512, dtype=torch.bool)
    poison[:50] = True
    y[poison] = 0
    trigger = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    before = trigger.logits.detach().clone()
    train_model(
        x, y, TrainConfig(epochs=1), "cpu", hook=LearnedPatchHook(trigger, poison)
    )
    assert not torch.equal(trigger.logits.detach(), before)  # the patch was optimised
    untouched = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    train_model(
        x,
        y,
        TrainConfig(epochs=1),
        "cpu",
        hook=LearnedPatchHook(untouched, torch.zeros(512, dtype=torch.bool)),
    )
    assert torch.equal(
        untouched.logits.detach(), before
    )  # no poisoned sample, no gradient


def test_the_learned_patch_hook_stamps_the_poisoned_rows_of_a_batch_only():
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    trigger = LearnedPatchTrigger(size=4, row=23, col=23, init_seed=0)
    poison = torch.zeros(100, dtype=torch.bool)
    poison[[3, 50, 77]] = True
    xb = torch.rand(4, 1, 28, 28)
    out = (
        LearnedPatchHook(trigger, poison)
        .transform(xb, torch.tensor([3, 4, 50, 60]))
        .detach()
    )
    stamped = trigger.apply(xb).detach()
    assert torch.equal(out[[0, 2]], stamped[[0, 2]]) and torch.equal(
        out[[1, 3]], xb[[1, 3]]
    )


def test_the_learned_triggers_step_scale_multiplies_how_far_its_logits_move(splits):
    # Adam moves every parameter with a steady gradient by about the learning rate per
    # step, so with the logits parameterised as step_scale * raw they move step_scale
    # times as far (two steps here), from the same starting patch
    from backdoor_utils.attacks.learned import LearnedPatchHook, LearnedPatchTrigger

    x, y = splits.x_train[:512], splits.y_train[:512].clone()
    poison = torch.zeros(512, dtype=torch.bool)
    poison[:128] = True
    y[poison] = 0
    moved = {}
    for scale in (1.0, 10.0):
        trigger = LearnedPatchTrigger(
            size=4, row=23, col=23, init_seed=0, step_scale=scale
        )
        before = trigger.logits.detach().clone()
        assert torch.allclose(
            trigger.values(), LearnedPatchTrigger(size=4, row=23, col=23).values()
        )
        train_model(
            x,
            y,
            TrainConfig(epochs=1, batch_size=256),
            "cpu",
            hook=LearnedPatchHook(trigger, poison),
        )
        moved[scale] = (trigger.logits.detach() - before).abs()
    assert moved[1.0].min() > 0
    assert torch.allclose(moved[10.0], 10 * moved[1.0], rtol=0.05)


def test_project_step_computes_exactly_the_benchmarks_tight_recipe(splits):
    # the bench compares speed; this makes sure both loops train the same model
    from backdoor_utils.tooling.bench import tight_recipe_training

    x, y = splits.x_train[:768], splits.y_train[:768]
    config = TrainConfig(epochs=2, seed=4)
    ours = train_model(x, y, config, device="cpu")
    tight = tight_recipe_training(x, y, config)
    for a, b in zip(ours.state_dict().values(), tight.state_dict().values()):
        assert torch.equal(a, b)


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


def test_evaluation_gives_the_same_numbers_at_any_batch_size():
    # EVAL_BATCH was chosen for speed alone: predictions, probabilities and activations
    # must not depend on it (a last, partial batch included)
    from backdoor_utils.tooling.bench import evaluation_speed
    from backdoor_utils.core.training import predict_proba
    from backdoor_utils.core.training import EVAL_BATCH

    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.rand(EVAL_BATCH + 37, 1, 28, 28)
    one_pass = model(x).detach()
    assert torch.equal(predict(model, x), one_pass.argmax(1))
    assert torch.allclose(predict_proba(model, x), one_pass.softmax(1), atol=1e-6)
    assert torch.equal(
        activations(model, x, "conv", batch_size=EVAL_BATCH),
        activations(model, x, "conv", batch_size=len(x)),
    )
    speed = evaluation_speed(model, x, (EVAL_BATCH, 64), repeats=1)
    assert all(
        row["same_predictions"] and row["images_per_s"] > 0 for row in speed.values()
    )


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
