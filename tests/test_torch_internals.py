"""torch's private internals, each beside its public fallback.

`make test` runs this module, with test_gradients, test_tangents, test_vmap and test_function,
with NPGRAD_TORCH_INTERNALS=0; the whole suite passes that way too.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from npgrad import _torch_internals as internals

from shared_ops import f64, matvec, softplus


def test_the_environment_variable_turns_the_internals_off() -> None:
    script = "import npgrad._torch_internals as i; print(i.ENABLED)"
    for value, expected in (("0", "False"), ("false", "False"), ("1", "True"), ("", "True")):
        environment = {**os.environ, "NPGRAD_TORCH_INTERNALS": value}
        done = subprocess.run(
            [sys.executable, "-c", script], env=environment, capture_output=True, text=True
        )
        assert done.stdout.strip() == expected, value


def test_the_eager_function_is_applied_without_binding() -> None:
    apply = matvec._apply
    if internals.ENABLED:
        assert apply is not matvec._eager.apply
    else:
        assert apply == matvec._eager.apply
    a, x = f64(3, 4).requires_grad_(), f64(4)
    torch.testing.assert_close(apply_result := matvec(a, x), a.detach() @ x)
    assert apply_result.grad_fn.name() == "shared_matvecBackward"


def test_mode_checks_answer_or_fall_back() -> None:
    if not internals.ENABLED:
        assert internals.special_mode_active()  # assume a transform: Function.apply decides
        assert not internals.transforms_active()  # a backward reads, or hands over on failure
        return
    assert not internals.special_mode_active()
    seen = []

    def probe(v: torch.Tensor) -> torch.Tensor:
        seen.append((internals.special_mode_active(), internals.innermost_vmap()))
        return v

    torch.func.vmap(probe)(f64(5, 2))
    assert seen == [(True, (1, 5))]


def test_every_path_gives_the_same_values() -> None:
    x = f64(6, 4).requires_grad_()
    expected = torch.nn.functional.softplus(x)
    torch.testing.assert_close(softplus(x), expected)
    torch.testing.assert_close(torch.func.vmap(softplus)(x.detach()), expected.detach())
    (g,) = torch.autograd.grad(softplus(x).sum(), x)
    torch.testing.assert_close(g, torch.sigmoid(x.detach()))
    torch.testing.assert_close(
        torch.func.vmap(torch.func.grad(lambda v: softplus(v).sum()))(x.detach()),
        torch.sigmoid(x.detach()),
    )
