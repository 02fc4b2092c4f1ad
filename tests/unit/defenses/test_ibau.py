"""I-BAU (defenses.ibau): the implicit hypergradient on a problem solved by hand, the
universal perturbation, and the repair's bookkeeping."""

import pytest
import torch
from torch import nn

from backdoor_utils import defenses
from backdoor_utils.core.models import SimpleCNN
from backdoor_utils.defenses.ibau import implicit_hypergradient, universal_perturbation


class _Theta(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(values))


def test_the_hypergradient_follows_delta_through_its_fixed_point():
    # inner: 1/2 |delta - A theta|^2, whose fixed point is delta* = A theta; outer:
    # 1/2 |delta|^2 + c . theta. With step s and K fixed-point iterations the method
    # gives c + (1 - (1 - s)^K) A^T delta (the exact gradient is c + A^T A theta).
    model = _Theta([1.0, -2.0])
    a = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    c = torch.tensor([0.5, 0.25])

    def inner(delta):
        return 0.5 * (delta - a @ model.theta).pow(2).sum()

    def outer(delta):
        return 0.5 * delta.pow(2).sum() + (c * model.theta).sum()

    delta = (a @ model.theta).detach()  # at the fixed point
    (grad,) = implicit_hypergradient(
        model, delta, inner, outer, steps=5, inner_step=0.1
    )
    expected = c + (1 - 0.9**5) * (a.T @ delta)
    assert torch.allclose(grad, expected, atol=1e-5)
    (once,) = implicit_hypergradient(model, delta, inner, outer, 1, 0.1)
    assert torch.allclose(once, c + 0.1 * (a.T @ delta), atol=1e-6)
    (longer,) = implicit_hypergradient(model, delta, inner, outer, 200, 0.1)
    assert torch.allclose(longer, c + a.T @ a @ model.theta.detach(), atol=1e-4)


def test_the_universal_perturbation_raises_the_models_loss_on_its_own_predictions():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SimpleCNN().eval()
        x = torch.rand(200, 1, 28, 28)
    with torch.no_grad():
        own = model(x).argmax(1)
    delta = universal_perturbation(model, list(x.split(50)), lr=10.0)
    assert delta.shape == (1, 1, 28, 28) and float(delta.norm()) > 0
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        moved = float(ce(model(x + delta), own)) - float(ce(model(x), own))
        # the same step against the gradient would lower it
        back = float(ce(model(x - delta), own)) - float(ce(model(x), own))
    assert moved > 0 > back


def test_ibau_repairs_a_copy_and_leaves_the_model_it_was_given(planted_free_model):
    model, defender = planted_free_model
    before = [p.detach().clone() for p in model.parameters()]
    repaired = defenses.get("ibau", rounds=1, batch_size=50).repair(
        model, defender, device="cpu"
    )
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert any(
        not torch.equal(p, q) for p, q in zip(repaired.model.parameters(), before)
    )


@pytest.fixture
def planted_free_model():
    from types import SimpleNamespace

    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = SimpleCNN().eval()
        x = torch.rand(100, 1, 28, 28)
    y = torch.arange(100) % 10
    return model, SimpleNamespace(x_tune=x, y_tune=y, x_select=x[:10], y_select=y[:10])
