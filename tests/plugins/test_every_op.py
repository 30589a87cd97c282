"""Every shipped op, one test case each: its examples pass npgrad.check and opcheck.

Parametrized over `npgrad.ops()`, so that one failing op does not hide the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

import npgrad
from npgrad import _torch_internals as internals

npgrad.load_plugins()
SHIPPED = [name for name in npgrad.ops() if name.startswith("scipy::")]
EXAMPLES = [(name, k) for name in SHIPPED for k in range(len(npgrad.get(name).examples))]


def test_every_shipped_op_has_examples() -> None:
    assert len(SHIPPED) == 27
    assert [name for name in SHIPPED if not npgrad.get(name).examples] == []


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[f"{n}-{k}" for n, k in EXAMPLES])
def test_example_passes_its_check(name: str, example: int) -> None:
    op = npgrad.get(name)
    args, kwargs = op.examples[example]()
    report = npgrad.check(op, *args, **kwargs)
    if name == "scipy::scipy_conv2d":  # the tutorial's op, differentiable once as written
        assert report.verdicts["gradgradcheck"].startswith("skipped")
        return
    if not internals.ENABLED:  # forward mode from ops under torch.func needs them
        assert report.verdicts["gradgradcheck"] == "passed"
        return
    assert set(report.verdicts.values()) == {"passed"}, report.verdicts


def differentiable(op: npgrad.Op, args: tuple) -> list[int]:
    """Positions of the dense floating inputs that have a gradient."""
    rules = op._rules
    return [
        i
        for i, a in enumerate(args)
        if isinstance(a, torch.Tensor)
        and a.is_floating_point()
        and a.layout == torch.strided
        and (rules.backward_kind != "vjp" or i in rules.vjps)
    ]


# The tutorial's op is differentiable once, as the tutorial wrote it.
TWICE = [name for name in SHIPPED if name != "scipy::scipy_conv2d"]


@pytest.mark.parametrize("name", TWICE)
def test_second_derivatives_through_every_door_match_finite_differences(name: str) -> None:
    op = npgrad.get(name)
    args, kwargs = op.examples[0]()
    args = tuple(a.double() if isinstance(a, torch.Tensor) else a for a in args)
    positions = differentiable(op, args)
    generator = torch.Generator().manual_seed(0)
    x = tuple(args[i] for i in positions)
    u, v = ([torch.randn(a.shape, dtype=a.dtype, generator=generator) for a in x] for _ in (0, 1))

    def loss(*moving: torch.Tensor) -> torch.Tensor:
        values = list(args)
        for i, value in zip(positions, moving, strict=True):
            values[i] = value
        outputs = op(*values, **kwargs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        # Composed with torch ops, so that second derivatives are not those of a linear map.
        return sum(torch.tanh(out).pow(2).sum() for out in outputs if out.is_floating_point())

    def gradient(*at: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = [a.detach().requires_grad_() for a in at]
        return torch.autograd.grad(loss(*leaves), leaves)

    eps = 1e-5
    above = gradient(*(a + eps * d for a, d in zip(x, v, strict=True)))
    below = gradient(*(a - eps * d for a, d in zip(x, v, strict=True)))
    expected = [(p - m) / (2 * eps) for p, m in zip(above, below, strict=True)]  # H v
    expected_uhv = sum((e * d).sum() for e, d in zip(expected, u, strict=True))

    def agrees(door: str, got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> None:
        for g, w in zip(got, want, strict=True):
            # Central differences of float64 gradients are good to about 1e-8 of their scale.
            error = (g - w).abs().max().item()
            assert error <= 1e-6 * w.abs().max().item() + 1e-9, f"{name}: {door}: {error}"

    agrees("autograd.functional.hvp", torch.autograd.functional.hvp(loss, x, tuple(v))[1], expected)
    if not internals.ENABLED:
        return  # the doors below are forward mode under torch.func
    every = tuple(range(len(x)))
    agrees("jvp of grad", torch.func.jvp(torch.func.grad(loss, every), x, tuple(v))[1], expected)
    grad_of_jvp = torch.func.grad(lambda *a: torch.func.jvp(loss, a, tuple(v))[1], every)(*x)
    agrees("grad of jvp", grad_of_jvp, expected)
    uhv = torch.func.jvp(lambda *a: torch.func.jvp(loss, a, tuple(u))[1], x, tuple(v))[1]
    agrees("jvp of jvp", (uhv,), (expected_uhv,))
