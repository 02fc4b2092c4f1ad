"""The chapters' parameter validation (orchestration.params)."""

import pytest

from backdoor_utils.orchestration.params import validate_parameters


@pytest.mark.parametrize(
    "name, value, needle",
    [
        ("poison_rate", 0.0, "open interval (0, 1)"),
        ("poison_rate", 1.5, "open interval (0, 1)"),
        ("target_label", 10, "<= 9"),
        ("target_label", -1, ">= 0"),
        ("attack", "laser", "'patch'"),
        ("epochs", 0, ">= 1"),
        ("n_train", 10, ">= 100"),
        ("blur_kernel", 4, "odd"),
        ("device", "tpu", "'auto'"),
        ("poison_rates", [0.01, 2.0], "open interval"),
    ],
)
def test_invalid_value_names_parameter_and_allowed_range(name, value, needle):
    with pytest.raises(ValueError) as err:
        validate_parameters(**{name: value})
    assert str(err.value).startswith(f"{name}")
    assert needle in str(err.value)


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(ValueError, match="poison_rat: unknown parameter.*poison_rate"):
        validate_parameters(poison_rat=0.1)


def test_valid_parameters_pass_through():
    params = dict(
        seed=0,
        target_label=0,
        poison_rate=0.01,
        epochs=5,
        n_train=None,
        device="auto",
        eps=8 / 255,
    )
    validate_parameters(**params)  # does not raise


def test_bool_is_not_an_integer():
    with pytest.raises(ValueError, match="seed"):
        validate_parameters(seed=True)
