"""The tensor <-> ndarray boundary: memory, dtype, device and shape policies."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import npgrad
from npgrad._convert import floating_result_dtype, reduce_to_shape, to_tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_sees_the_inputs_memory(name: str, dtype: torch.dtype) -> None:
    seen = []

    @npgrad.op(name)
    def ident_sum(x):
        seen.append(x)
        return x.sum(keepdims=True)

    x = torch.randn(4, 3, dtype=dtype)
    ident_sum(x)
    assert seen[0].__array_interface__["data"][0] == x.data_ptr()
    assert not seen[0].flags.writeable


def test_result_comes_back_without_a_copy(name: str) -> None:
    made = []

    @npgrad.op(name)
    def fresh(x):
        out = np.asarray(x) * 2
        made.append(out)
        return out

    y = fresh(torch.ones(3, dtype=torch.float64))
    assert y.data_ptr() == made[0].__array_interface__["data"][0]


def test_non_contiguous_inputs_work(name: str) -> None:
    @npgrad.op(name)
    def double(x):
        return 2 * x

    @double.backward
    def _(grad, x):
        return 2 * grad

    base = torch.randn(6, 8, dtype=torch.float64)
    x = base.t()[::2].requires_grad_()
    y = double(x)
    torch.testing.assert_close(y, 2 * x.detach())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x[::-1],  # negative strides
        lambda x: np.broadcast_to(x.sum(), x.shape),  # read-only, stride 0
        lambda x: (x * 3).astype(x.dtype.newbyteorder(">")),  # big-endian
        lambda x: x.T,  # a view of the (read-only) input
    ],
    ids=["negative-strides", "read-only", "big-endian", "view-of-input"],
)
def test_awkward_results_are_copied(name: str, make) -> None:
    @npgrad.op(name)
    def awkward(x):
        return make(x)

    x = torch.arange(6.0).reshape(2, 3)
    y = awkward(x)
    expected = torch.from_numpy(np.ascontiguousarray(make(x.numpy())).astype("=f4"))
    torch.testing.assert_close(y, expected)
    y.add_(1)  # a copy: the input must not change
    torch.testing.assert_close(x, torch.arange(6.0).reshape(2, 3))


def test_forward_cannot_write_into_its_input(name: str) -> None:
    @npgrad.op(name)
    def clobber(x):
        x += 1
        return x

    x = torch.zeros(3)
    with pytest.raises(ValueError, match="read-only") as info:
        clobber(x)
    assert any("copy first" in note for note in info.value.__notes__)
    assert torch.equal(x, torch.zeros(3))


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((torch.float32, torch.float32), torch.float32),
        ((torch.float32, torch.float64), torch.float64),
        ((torch.float16, torch.float32), torch.float32),
        ((torch.bfloat16, torch.float16), torch.float32),
        ((torch.bfloat16, torch.int64), torch.bfloat16),
        ((torch.int32, torch.int64), torch.float32),
    ],
)
def test_floating_result_dtype_matches_torch(dtypes, expected) -> None:
    tensors = [torch.ones(2, dtype=d) for d in dtypes]
    assert floating_result_dtype(tensors) == expected
    promoted = torch.result_type(tensors[0], tensors[1])
    if promoted.is_floating_point:
        assert promoted == expected


def test_zero_dim_tensors_promote_as_in_torch() -> None:
    tensors = [torch.ones(2, dtype=torch.float32), torch.tensor(1.0, dtype=torch.float64)]
    assert floating_result_dtype(tensors) == (tensors[0] + tensors[1]).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_output_dtype_is_the_inputs_whatever_scipy_returns(name: str, dtype) -> None:
    computed_in = []

    @npgrad.op(name)
    def to_f64(x, w):
        computed_in.append(x.dtype)
        return (x * w).astype(np.float64)  # as SciPy often does

    @to_f64.backward
    def _(grad, x, w):
        return (grad * w).astype(np.float64), (grad * x).astype(np.float64)

    x = torch.randn(3, dtype=dtype, requires_grad=True)
    w = torch.randn(3, dtype=dtype, requires_grad=True)
    y = to_f64(x, w)
    assert y.dtype == dtype
    half = dtype in (torch.float16, torch.bfloat16)
    assert computed_in[0] == (np.float32 if half else np.dtype(str(dtype).split(".")[1]))
    y.sum().backward()
    assert x.grad.dtype == dtype
    assert w.grad.dtype == dtype
    torch.testing.assert_close(x.grad, w.detach())


def test_mixed_precision_promotes_and_casts_each_gradient_back(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.backward
    def _(grad, x, w):
        return grad * w, grad * x

    x = torch.randn(3, dtype=torch.float32, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = mul(x, w)
    assert y.dtype == torch.float64 == (x * w).dtype
    y.sum().backward()
    assert x.grad.dtype == torch.float32
    assert w.grad.dtype == torch.float64


def test_integer_and_bool_outputs_keep_dtype_and_are_not_differentiable(name: str) -> None:
    @npgrad.op(name)
    def stats(x):
        return x * 2, np.argmax(x, keepdims=True), x > 0

    @stats.backward
    def _(grad, grad_index, grad_mask, x):
        return 2 * grad

    x = torch.randn(5, requires_grad=True)
    y, index, mask = stats(x)
    assert index.dtype == torch.int64
    assert not index.requires_grad
    assert mask.dtype == torch.bool
    assert not mask.requires_grad
    assert y.requires_grad
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), 2.0))


def test_integer_inputs_get_no_gradient(name: str) -> None:
    @npgrad.op(name)
    def gather(x, index):
        return x[index]

    @gather.backward
    def _(grad, x, index):
        out = np.zeros_like(x)
        np.add.at(out, index, grad)
        return out, np.ones(index.shape)  # the integer input's gradient is dropped

    x = torch.randn(4, requires_grad=True)
    index = torch.tensor([0, 0, 3])
    gather(x, index).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 0.0, 0.0, 1.0]))


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (torch.ones(2, dtype=torch.complex64), torch.complex64),
        (np.ones(2, dtype=np.complex128), torch.complex128),
        ("half", torch.complex32),
    ],
    ids=["tensor", "ndarray", "half"],
)
def test_complex_inputs_come_back_complex(name: str, value, dtype: torch.dtype) -> None:
    if isinstance(value, str):
        with warnings.catch_warnings():  # torch's notice that complex32 is experimental
            warnings.simplefilter("ignore", UserWarning)
            value = torch.ones(2, dtype=torch.complex32)
    seen = []

    @npgrad.op(name)
    def double(x):
        seen.append(x.dtype)
        return 2 * x

    out = double(value)
    assert out.dtype == dtype
    assert seen == [np.complex128 if dtype == torch.complex128 else np.complex64]  # half: via 64


@pytest.mark.parametrize(
    ("x", "w", "dtype"),
    [
        (torch.float32, torch.complex64, torch.complex64),
        (torch.float64, torch.complex64, torch.complex128),
        (torch.float16, torch.complex64, torch.complex64),
        (torch.float32, torch.float32, torch.complex64),  # a complex result of real inputs
    ],
)
def test_complex_results_take_torchs_promotion(name: str, x, w, dtype: torch.dtype) -> None:
    @npgrad.op(name)
    def rotate(a, b):
        return a * b * 1j

    assert rotate(torch.ones(2, dtype=x), torch.ones(2, dtype=w)).dtype == dtype


def test_real_results_of_complex_inputs_are_real(name: str) -> None:
    @npgrad.op(name)
    def magnitude(z):
        return np.abs(z)

    assert magnitude(torch.ones(2, dtype=torch.complex64)).dtype == torch.float32
    assert magnitude(torch.ones(2, dtype=torch.complex128)).dtype == torch.float64


def test_conj_and_neg_views_are_resolved_before_numpy(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x.copy()

    z = torch.tensor([1 + 2j, 3 - 1j])
    torch.testing.assert_close(ident(z.conj()), z.conj().resolve_conj())
    negated = z.conj().imag  # a real view with the neg bit
    assert negated.is_neg()
    torch.testing.assert_close(ident(negated), torch.tensor([-2.0, 1.0]))


def test_a_complex_gradient_of_a_real_input_is_its_real_part(name: str) -> None:
    # As torch's own ops: y = x * (1 + 2j) for a real x gives dL/dx = Re(conj(1 + 2j) g).
    @npgrad.op(name)
    def lift(x):
        return x * (1 + 2j)

    @lift.backward
    def _(g, x):
        return g * np.conj(1 + 2j)

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(lift(x).abs().pow(2).sum(), x)
    (theirs,) = torch.autograd.grad((x * (1 + 2j)).abs().pow(2).sum(), x)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs)
    assert torch.autograd.gradcheck(lift, (x,))


@pytest.mark.parametrize(
    ("grad", "shape", "expected"),
    [
        ((4, 3), (4, 3), (4, 3)),
        ((4, 3), (1, 3), (1, 3)),
        ((4, 3), (3,), (3,)),
        ((4, 3), (), ()),
        ((2, 4, 3), (4, 1), (4, 1)),
        ((0, 3), (1, 3), (1, 3)),
    ],
)
def test_reduce_to_shape_sums_broadcast_dims(grad, shape, expected) -> None:
    g = np.random.randn(*grad)
    reduced = reduce_to_shape(g, shape)
    assert reduced is not None
    assert reduced.shape == expected
    # The oracle: torch's own sum_to_size.
    np.testing.assert_allclose(reduced, torch.from_numpy(g).sum_to_size(shape).numpy())


def test_reduce_to_shape_adds_size_one_dims() -> None:
    reduced = reduce_to_shape(np.array(2.5), (1, 1))
    assert reduced is not None
    assert reduced.tolist() == [[2.5]]


@pytest.mark.parametrize(("grad", "shape"), [((4, 3), (4, 2)), ((3,), (4, 3)), ((4,), (2, 2))])
def test_reduce_to_shape_refuses_other_shapes(grad, shape) -> None:
    assert reduce_to_shape(np.ones(grad), shape) is None


def test_to_tensor_moves_and_casts() -> None:
    tensor = to_tensor(np.ones(3), torch.float16, torch.device("meta"))
    assert tensor.device.type == "meta"
    assert tensor.dtype == torch.float16


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_are_computed_on_the_cpu_and_come_back(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        assert isinstance(x, np.ndarray)
        return x * w

    @mul.backward
    def _(grad, x, w):
        return grad * w, grad * x

    x = torch.randn(3, device="cuda", requires_grad=True)
    w = torch.randn(3, device="cuda", requires_grad=True)
    y = mul(x, w)
    assert y.device == x.device
    y.sum().backward()
    assert x.grad.device == x.device
    assert w.grad.device == w.device
    torch.testing.assert_close(x.grad, w.detach())


def test_broadcast_gradients_are_summed_down(name: str) -> None:
    @npgrad.op(name)
    def add(x, b):
        return x + b

    @add.backward
    def _(grad, x, b):
        return grad, grad  # b's gradient has x's shape

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn((), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(add, (x, b))
    assert torch.autograd.gradcheck(add, (x, c))


def test_gradient_of_a_wrong_shape_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def corr(x, w):
        return x * w.sum()

    @corr.backward
    def _(grad, x, w):
        return grad * w.sum(), np.ones((3, 3))

    w = torch.randn(2, 2, requires_grad=True)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned a gradient of shape \(3, 3\) for input "w" '
        r"\(position 1\) of shape \(2, 2\); return one gradient per input, shaped like it",
    ):
        corr(torch.randn(4), w).sum().backward()


def test_gradient_of_a_wrong_kind_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    @ident.backward
    def _(grad, x):
        return "oops"

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned a str as the gradient for input "x"',
    ):
        ident(torch.ones(2, requires_grad=True)).sum().backward()


@pytest.mark.parametrize(
    "make",
    [
        lambda g: np.ascontiguousarray(g[::-1])[::-1],  # negative strides
        lambda g: np.asfortranarray(g),
        lambda g: g.astype(g.dtype.newbyteorder(">")),
        lambda g: g,  # the read-only gradient itself
    ],
    ids=["negative-strides", "fortran", "big-endian", "read-only"],
)
def test_awkward_gradients_are_taken(name: str, make) -> None:
    @npgrad.op(name)
    def ident(x):
        return x * 1

    @ident.backward
    def _(grad, x):
        return make(grad)

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64)
    ident(x).backward(g)
    torch.testing.assert_close(x.grad, g)


def test_tensor_backward_gradients_are_reduced_cast_and_checked(name: str) -> None:
    @npgrad.op(name)
    def add(x, b):
        return x + b

    @add.tensor_backward
    def _(grad, x, b, *, needs_input_grad):
        return grad.double(), grad  # b's is summed down, x's cast back to float32

    x = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(1, 2, requires_grad=True)
    add(x, b).sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(b.grad, torch.full((1, 2), 3.0))

    @npgrad.op(name + "_bad")
    def bad(x):
        return x

    @bad.tensor_backward
    def _(grad, x):
        return grad[:1]

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}_bad": tensor backward returned a gradient of shape \(1,\) for '
        r'input "x" \(position 0\) of shape \(3,\)',
    ):
        bad(torch.ones(3, requires_grad=True)).sum().backward()


def test_a_contiguous_looking_gradient_with_a_negative_stride(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x * 1

    @ident.backward
    def _(grad, x):
        return np.flip(grad.copy(), -1)  # shape (2, 1): flagged contiguous, stride negative

    x = torch.randn(2, 1, requires_grad=True)
    ident(x).backward(torch.ones(2, 1))
    torch.testing.assert_close(x.grad, torch.ones(2, 1))
