"""Training and evaluation (core.training): seeded, deterministic, fp32 evaluation."""

import torch

from backdoor_utils.core.models import SimpleCNN
from backdoor_utils.core.training import (
    TrainConfig,
    activations,
    bf16_native,
    predict,
    train_model,
)


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
