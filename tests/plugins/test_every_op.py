"""Every shipped op, one test case each: its examples pass npgrad.check and opcheck.

Parametrized over `npgrad.ops()`, so that one failing op does not hide the others.
"""

from __future__ import annotations

import pytest
import torch

import npgrad

npgrad.load_plugins()
SHIPPED = [name for name in npgrad.ops() if name.startswith("scipy::")]
EXAMPLES = [(name, k) for name in SHIPPED for k in range(len(npgrad.get(name).examples))]


def test_every_shipped_op_has_examples() -> None:
    assert len(SHIPPED) == 23
    assert [name for name in SHIPPED if not npgrad.get(name).examples] == []


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[f"{n}-{k}" for n, k in EXAMPLES])
def test_example_passes_its_check(name: str, example: int) -> None:
    op = npgrad.get(name)
    args, kwargs = op.examples[example]()
    report = npgrad.check(op, *args, **kwargs)
    expected = "passed" if op._rules.backward_kind == "tensor" else "skipped"
    assert report.verdicts["gradgradcheck"].startswith(expected)


# From torch 2.14, opcheck reads .grad of its own non-leaf clones (its warning, not npgrad's).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("name", SHIPPED)
def test_opcheck_passes(name: str) -> None:
    op = npgrad.get(name)
    if op._library_problem is not None:
        pytest.skip(f"not a custom op: {op._library_problem}")
    args, kwargs = op.examples[0]()
    if not all(isinstance(a, torch.Tensor) and a.layout == torch.strided for a in args):
        pytest.skip(
            "a number as a positional input (gaussian_filter's sigma) has no custom-op schema, "
            "and opcheck's fake tensors are dense (spsolve's A is sparse): such calls run "
            "eagerly, as a graph break under torch.compile"
        )
    rules = op._rules
    # Only inputs with a gradient (the order of a Bessel function has none) require grad.
    args = tuple(
        a.detach().requires_grad_(
            a.is_floating_point() and (rules.backward_kind != "vjp" or i in rules.vjps)
        )
        for i, a in enumerate(args)
    )
    namespace, opname = name.split("::")
    torch.library.opcheck(getattr(getattr(torch.ops, namespace), opname).default, args, kwargs)
