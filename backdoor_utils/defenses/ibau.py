"""I-BAU, Implicit Backdoor Adversarial Unlearning (Zeng et al., ICLR 2022; the authors'
code YiZeng623/I-BAU): repair a backdoored model with a small clean set by solving the
minimax problem "the model that is robust to the worst universal perturbation".

The defender's clean images are taken in mini-batches of ``batch_size``. Each round:

1. *Inner maximisation.* A universal perturbation delta (one image, starting at zero) is
   moved by SGD (lr ``inner_lr``) over one pass of the batches to maximise the
   cross-entropy of the model on ``x + delta`` against its own predictions on ``x``,
   with an L2 penalty ``0.001 |delta|^2`` - a stand-in for the unknown trigger.
2. *Outer minimisation with the implicit hypergradient.* For every batch, the model's
   parameters take one Adam step (lr ``outer_lr``) on the clean cross-entropy of the
   batch with delta added to a ``patched_share`` of its images, differentiated *through*
   delta's dependence on the parameters: delta is taken as the fixed point of one
   gradient step of the inner objective (step 0.1, on the first batch, as the authors'
   code does), and the hypergradient is approximated by ``fixed_point_steps``
   iterations of the fixed-point method.

The authors' settings (CIFAR-10, 5,000 clean images): 5 rounds, batch 100, inner SGD lr
10, outer Adam lr 0.001, K = 5 fixed-point iterations, 1% of each batch patched, no
clipping of ``x + delta``. The book uses them as they are, at the book's training
precision (bf16 autocast where the CPU computes bf16 natively, as in training). Three
exact savings bring 5 rounds over 5,000 images to about 1.3x training one model
(measured on the Performance page): the first fixed-point iteration, which starts from
v = 0, is ``d outer/d delta`` without a Hessian-vector product; the perturbation's pass
asks autograd for delta's gradient only; and the repair runs in the default memory
layout, in which the hypergradient's double backward passes are faster than in
training's channels-last. Why I-BAU rather than ANP (Wu and Wang 2021), the other
post-2021 repair the benchmarks report working: ANP perturbs batch-normalisation
neurons, and the book's SimpleCNN has none.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.checks import integer, open_unit, positive
from ..core.column import Column
from ..core.models import SimpleCNN
from ..core.training import bf16_native, resolve_device
from .base import DefenderData, Defense, Repair, register


def universal_perturbation(
    model: SimpleCNN, batches: list, lr: float, penalty: float = 0.001
) -> torch.Tensor:
    """One pass of SGD over ``batches`` (lists of images) maximising the
    cross-entropy of ``model`` on ``x + delta`` against its predictions on ``x``, with
    ``penalty * |delta|^2``: the round's universal perturbation [1, 1, 28, 28]."""
    delta = torch.zeros_like(batches[0][:1], requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=lr)
    for x in batches:
        with torch.no_grad():
            own = model(x).argmax(1)
        loss = -F.cross_entropy(model(x + delta), own) + penalty * delta.pow(2).sum()
        (delta.grad,) = torch.autograd.grad(loss, delta)  # not the model's gradients
        optimizer.step()
    return delta.detach()


def implicit_hypergradient(
    model: SimpleCNN,
    delta: torch.Tensor,
    inner_loss,
    outer_loss,
    steps: int,
    inner_step: float = 0.1,
) -> list:
    """The gradient of ``outer_loss(delta)`` with respect to the model's parameters,
    taking delta as the fixed point of ``phi(delta) = delta - inner_step *
    d inner_loss / d delta``: ``d outer/d theta + (d phi/d theta)^T v`` with ``v`` from
    ``steps`` iterations of ``v <- (d phi/d delta)^T v + d outer/d delta`` (the
    fixed-point method; the first iteration, from v = 0, gives ``d outer/d delta``
    itself and is taken without its Hessian-vector product)."""
    params = [p for p in model.parameters() if p.requires_grad]
    delta = delta.detach().requires_grad_(True)
    outer = outer_loss(delta)
    outer_delta, *outer_params = torch.autograd.grad(
        outer, [delta, *params], allow_unused=True, retain_graph=True
    )
    (inner_grad,) = torch.autograd.grad(inner_loss(delta), delta, create_graph=True)
    mapped = delta - inner_step * inner_grad
    v = outer_delta
    for _ in range(steps - 1):
        (jv,) = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)
        v = jv + outer_delta
    through = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [
        (a if a is not None else torch.zeros_like(p))
        + (b if b is not None else torch.zeros_like(p))
        for p, a, b in zip(params, outer_params, through)
    ]


@register
@dataclass(frozen=True)
class IBAU(Defense):
    """I-BAU with the authors' settings: ``rounds`` of the inner maximisation and the
    outer implicit-hypergradient steps over the defender's tuning images."""

    name = "ibau"
    column = Column("ASR after", False, 0.05, "I-BAU", "repair")
    rules = {
        "rounds": integer(1, 100),
        "batch_size": integer(1, 5000),
        "inner_lr": positive(1000.0),
        "outer_lr": positive(1.0),
        "fixed_point_steps": integer(1, 100),
        "patched_share": open_unit,
    }
    rounds: int = 5
    batch_size: int = 100
    inner_lr: float = 10.0
    outer_lr: float = 1e-3
    fixed_point_steps: int = 5
    patched_share: float = 0.01

    def repair(
        self,
        model: SimpleCNN,
        defender: DefenderData,
        seed: int = 0,
        device: str = "auto",
    ) -> Repair:
        """A copy of ``model`` after the rounds (the input model is left as it is)."""
        dev = resolve_device(device)
        # the default layout, not the channels-last of training: the double backward
        # passes of the hypergradient run faster in it (Performance page)
        model = copy.deepcopy(model).to(dev).to(memory_format=torch.contiguous_format)
        model.eval()
        x = defender.x_tune.to(dev).contiguous()
        y = defender.y_tune.to(dev)
        batches = list(x.split(self.batch_size))
        labels = list(y.split(self.batch_size))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.outer_lr)
        generator = torch.Generator().manual_seed(seed)

        def inner_loss(delta):
            logits = model(batches[0] + delta)
            ce = F.cross_entropy(logits, labels[0])
            return -ce + 0.001 * delta.pow(2).sum()

        # the training precision: bf16 autocast where the device computes it natively
        precision = torch.autocast(
            dev.type, torch.bfloat16, enabled=bf16_native(dev.type)
        )
        for _ in range(self.rounds):
            with precision:
                delta = universal_perturbation(model, batches, self.inner_lr).float()
            for xb, yb in zip(batches, labels):
                n_patched = int(len(xb) * self.patched_share)
                chosen = torch.randperm(len(xb), generator=generator)[:n_patched]
                mask = torch.zeros(len(xb), 1, 1, 1, device=dev)
                mask[chosen.to(dev)] = 1.0

                def outer_loss(d, xb=xb, yb=yb, mask=mask):
                    return F.cross_entropy(model(xb + mask * d), yb)

                with precision:
                    grads = implicit_hypergradient(
                        model, delta, inner_loss, outer_loss, self.fixed_point_steps
                    )
                optimizer.zero_grad(set_to_none=True)
                for p, g in zip(model.parameters(), grads):
                    p.grad = g.detach()
                optimizer.step()
        return Repair(model.eval(), {"rounds": self.rounds})
