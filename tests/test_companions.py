"""Companion ops: NumPy backwards and jvps as ops of their own, under torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad, jacfwd, jacrev

import npgrad

from shared_ops import f64, make_mul, matvec, softplus


def test_grad_jacrev_jacfwd_match_torch() -> None:
    a, x = f64(3, 4), f64(4)
    torch.testing.assert_close(grad(lambda v: matvec(a, v).sum())(x), a.sum(0))
    torch.testing.assert_close(jacrev(matvec, argnums=1)(a, x), a)
    torch.testing.assert_close(jacfwd(matvec, argnums=1)(a, x), a)
    torch.testing.assert_close(jacrev(matvec)(a, x), jacrev(torch.mv)(a, x))
    torch.testing.assert_close(jacfwd(softplus)(x), jacfwd(torch.nn.functional.softplus)(x))


def test_numpy_backward_refuses_second_order_under_torch_func() -> None:
    with pytest.raises(
        npgrad.NpgradError, match=r'"shared::softplus": asked for a second derivative'
    ):
        jacrev(jacrev(softplus))(f64(3))


def test_a_companion_states_what_it_takes_in_its_schema() -> None:
    # No hidden config keys: the companion's own keywords are named in its custom-op schema.
    backward = torch.ops.shared.matvec_backward.default._schema
    assert str(backward) == (
        "shared::matvec_backward(Tensor?[] args, *, bool[] needs_input_grad=[], "
        "bool single_output=True) -> Tensor[]"
    )
    jvp = torch.ops.shared.matvec_jvp.default._schema
    assert "int input_count=0" in str(jvp)
    assert matvec._companions["backward"]._rules.signature.text == "(m),(m,n),(n)->(m,n),(n)"
    assert matvec._companions["jvp"]._rules.signature.text == "(m,n),(n),(m,n),(n)->(m)"
    assert "shared::matvec_backward" not in npgrad.ops()  # companions are not registered


def test_a_companion_returns_every_gradient_of_a_known_shape(name: str) -> None:
    a, x, g = f64(2, 3, 4), f64(4), f64(2, 3)
    grad_a, grad_x = matvec._companions["backward"](
        g, a, x, needs_input_grad=(True, True), single_output=True
    )
    assert grad_a.shape == (2, 3, 4)
    assert grad_x.shape == (2, 4)  # per batch element: the caller sums the broadcast down
    torch.testing.assert_close(grad_x, torch.einsum("bm,bmn->bn", g, a))
    mul = make_mul(name)
    grad_x, grad_w = mul._companions["backward"](
        g, g, g, needs_input_grad=(False, True), single_output=True
    )
    assert not grad_x.any()  # not asked for: zeros, an output all the same
    torch.testing.assert_close(grad_w, g * g)


def test_sparse_gradients_pass_through_a_companion(name: str) -> None:
    # create_graph=True takes the companion; a scipy.sparse gradient keeps the input's pattern.
    @npgrad.op(name)
    def apply(a, x):
        return a @ x

    @apply.backward
    def _(g, a, x):
        import scipy.sparse

        grad_a = scipy.sparse.csr_matrix(np.outer(g, x)).multiply(a != 0)
        return grad_a, a.T @ g

    dense = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    a = dense.to_sparse().requires_grad_()
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    grad_a, grad_x = torch.autograd.grad(apply(a, x).sum(), (a, x), create_graph=True)
    assert grad_a.layout == torch.sparse_coo
    torch.testing.assert_close(grad_a.to_dense(), torch.tensor([[1.0, 0.0], [1.0, 2.0]]).double())
    torch.testing.assert_close(grad_x, dense.sum(0))
