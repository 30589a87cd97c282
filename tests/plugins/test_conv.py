"""npgrad_scipy.conv against oracles: the tutorial's own Function, scipy.signal, F.conv2d."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import Function
from torch.autograd.gradcheck import gradcheck

import npgrad
from npgrad import _torch_internals as internals
from npgrad_scipy import (
    Conv1d,
    Conv2d,
    Conv3d,
    ScipyConv2d,
    conv2d,
    convolve2d,
    correlate2d,
    correlate_channels,
    scipy_conv2d,
)
from npgrad_scipy.signal import convolve, correlate

MODES = ("valid", "same", "full")
METHODS = ("direct", "fft", "auto")
FLOATS = (torch.float32, torch.float64)


class ScipyConv2dFunction(Function):
    """The oracle: the tutorial's hand-written Function, verbatim."""

    @staticmethod
    def forward(ctx, input, filter, bias):
        input, filter, bias = input.detach(), filter.detach(), bias.detach()
        result = scipy.signal.correlate2d(input.numpy(), filter.numpy(), mode="valid")
        result += bias.numpy()
        ctx.save_for_backward(input, filter, bias)
        return torch.as_tensor(result, dtype=input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grad_output = grad_output.detach()
        input, filter, _bias = ctx.saved_tensors
        grad_output = grad_output.numpy()
        grad_bias = np.sum(grad_output, keepdims=True)
        grad_input = scipy.signal.convolve2d(grad_output, filter.numpy(), mode="full")
        grad_filter = scipy.signal.correlate2d(input.numpy(), grad_output, mode="valid")
        return (
            torch.from_numpy(grad_input),
            torch.from_numpy(grad_filter).to(torch.float),
            torch.from_numpy(grad_bias).to(torch.float),
        )


@pytest.mark.parametrize(
    ("size", "filter_size"), [((5, 5), (2, 2)), ((20, 20), (3, 3)), ((9, 7), (4, 2))]
)
def test_matches_the_hand_written_function(size, filter_size) -> None:
    module = ScipyConv2d(*filter_size)
    input = torch.randn(*size, requires_grad=True)
    leaves = [
        input.detach().clone().requires_grad_(),
        module.filter.detach().clone().requires_grad_(),
        module.bias.detach().clone().requires_grad_(),
    ]
    ours = module(input)
    theirs = ScipyConv2dFunction.apply(*leaves)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape)
    ours.backward(grad)
    theirs.backward(grad)
    for got, expected in zip([input, module.filter, module.bias], leaves, strict=True):
        assert got.grad.dtype == expected.grad.dtype
        torch.testing.assert_close(got.grad, expected.grad)


def test_the_tutorials_gradcheck_passes() -> None:
    module_conv = ScipyConv2d(3, 3)
    input = [torch.randn(20, 20, dtype=torch.double, requires_grad=True)]
    assert gradcheck(module_conv, input, eps=1e-6, atol=1e-4)


def test_all_three_gradients_check_in_float64() -> None:
    args = [torch.randn(10, 10), torch.randn(3, 3), torch.randn(1, 1)]
    report = npgrad.check(scipy_conv2d, *args)
    assert report.verdicts["gradcheck"] == "passed"


def test_layer_has_the_tutorials_parameters() -> None:
    module = ScipyConv2d(2, 3)
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == [
        ("filter", (2, 3)),
        ("bias", (1, 1)),
    ]
    assert module(torch.randn(5, 5)).grad_fn.name() == "scipy_scipy_conv2dBackward"


def test_the_op_is_registered_and_the_plugin_is_an_entry_point() -> None:
    assert npgrad.get("scipy::scipy_conv2d") is scipy_conv2d
    plugins = {ep.name: ep.value for ep in entry_points(group="npgrad.plugins")}
    assert plugins.get("scipy") == "npgrad_scipy"


MODES = ("valid", "same", "full")

METHODS = ("direct", "fft", "auto")

FLOATS = (torch.float32, torch.float64)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


@st.composite
def single_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, int], str, str, torch.dtype]:
    mode = draw(st.sampled_from(MODES))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    low_h, low_w = (kh, kw) if mode == "valid" else (1, 1)
    h, w = draw(st.integers(low_h, 12)), draw(st.integers(low_w, 12))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    return (
        (*batch, h, w),
        (kh, kw),
        mode,
        draw(st.sampled_from(METHODS)),
        draw(st.sampled_from(FLOATS)),
    )


@settings(max_examples=60, deadline=None)
@given(single_cases(), st.sampled_from(["correlate2d", "convolve2d"]))
def test_single_kernel_ops_equal_scipy(case, which: str) -> None:
    shape, kernel, mode, method, dtype = case
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(kernel, dtype=dtype)
    op, reference = {
        "correlate2d": (correlate2d, scipy.signal.correlate2d),
        "convolve2d": (convolve2d, scipy.signal.convolve2d),
    }[which]
    ours = op(x, w, mode=mode, method=method)
    images = x.reshape(-1, *shape[-2:]).numpy()
    expected = np.stack([reference(image, w.numpy(), mode=mode) for image in images])
    assert ours.dtype == dtype
    torch.testing.assert_close(
        ours,
        torch.from_numpy(expected.reshape(*shape[:-2], *expected.shape[-2:])),
        **tolerance(dtype),
    )


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], str, str, torch.dtype]:
    mode = draw(st.sampled_from(MODES))
    kh, kw = (
        2 * draw(st.integers(0, 2)) + 1,
        2 * draw(st.integers(0, 2)) + 1,
    )  # odd: F.conv2d pads alike
    h, w = draw(st.integers(kh, 10)), draw(st.integers(kw, 10))
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (
        (n, c_in, h, w),
        (c_out, c_in, kh, kw),
        mode,
        draw(st.sampled_from(METHODS)),
        draw(st.sampled_from(FLOATS)),
    )


@settings(max_examples=60, deadline=None)
@given(conv_cases(), st.booleans())
def test_conv2d_equals_torch_with_the_kernel_flipped(case, with_bias: bool) -> None:
    x_shape, w_shape, mode, method, dtype = case
    x = torch.randn(x_shape, dtype=dtype)
    w = torch.randn(w_shape, dtype=dtype)
    b = torch.randn(w_shape[0], dtype=dtype) if with_bias else None
    padding = {
        "valid": 0,
        "same": (w_shape[2] // 2, w_shape[3] // 2),
        "full": (w_shape[2] - 1, w_shape[3] - 1),
    }[mode]
    expected = F.conv2d(x, w.flip((-2, -1)), b, padding=padding)
    torch.testing.assert_close(
        conv2d(x, w, b, mode=mode, method=method), expected, **tolerance(dtype)
    )


@pytest.mark.parametrize("kernel", [(2, 2), (2, 3), (4, 1)])
@pytest.mark.parametrize("mode", MODES)
def test_conv2d_even_kernels_follow_scipy(kernel, mode: str) -> None:
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    w = torch.randn(4, 3, *kernel, dtype=torch.float64)
    expected = np.zeros((2, 4, *scipy.signal.convolve2d(x[0, 0], w[0, 0], mode=mode).shape))
    for n in range(2):
        for o in range(4):
            for c in range(3):
                expected[n, o] += scipy.signal.convolve2d(x[n, c], w[o, c], mode=mode)
    for method in ("direct", "fft"):
        torch.testing.assert_close(
            conv2d(x, w, mode=mode, method=method), torch.from_numpy(expected)
        )


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_gradgradcheck_every_mode_and_method(mode: str, method: str) -> None:
    kernel = (2, 3) if mode == "same" else (3, 3)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return conv2d(x, w, b, mode=mode, method=method)

    assert torch.autograd.gradcheck(layer, (x, w, b))
    assert torch.autograd.gradgradcheck(layer, (x, w, b))
    images = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*kernel, dtype=torch.float64, requires_grad=True)
    for op in (correlate2d, convolve2d):

        def single(a: torch.Tensor, b: torch.Tensor, op=op) -> torch.Tensor:
            return op(a, b, mode=mode, method=method)

        assert torch.autograd.gradcheck(single, (images, k))
        assert torch.autograd.gradgradcheck(single, (images, k))


def test_hessian_vector_product_through_conv2d() -> None:
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(w)

    def loss(weight: torch.Tensor, conv) -> torch.Tensor:
        return (conv(x, weight) ** 2).sum()

    def ours(a, k):
        return conv2d(a, k, mode="same")

    def theirs(a, k):
        return F.conv2d(a, k.flip((-2, -1)), padding=1)

    _, hvp = torch.autograd.functional.hvp(lambda k: loss(k, ours), w, v)
    _, expected = torch.autograd.functional.hvp(lambda k: loss(k, theirs), w, v)
    torch.testing.assert_close(hvp, expected)


def test_third_derivative_through_correlate_channels() -> None:
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    y = (correlate_channels(x, w, padding=(1, 0, 1, 0)) ** 3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    (t,) = torch.autograd.grad(h.sum(), w)
    expected_y = (F.conv2d(F.pad(x, (1, 0, 1, 0)), w) ** 3).sum()
    (eg,) = torch.autograd.grad(expected_y, x, create_graph=True)
    (eh,) = torch.autograd.grad(eg.sum(), x, create_graph=True)
    (et,) = torch.autograd.grad(eh.sum(), w)
    torch.testing.assert_close(t, et)


def test_low_precision_and_integer_inputs_follow_the_dtype_policy() -> None:
    x = torch.randn(1, 1, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(1, 1, 3, 3, dtype=torch.bfloat16, requires_grad=True)
    y = conv2d(x, w)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.bfloat16
    assert correlate2d(
        torch.ones(4, 4, dtype=torch.int64), torch.ones(2, 2, dtype=torch.int64)
    ).dtype == (torch.float32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 4, 3, 3)),
            r"expected input \(N, C_in, H, W\) and weight",
        ),
        (
            lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(3, 2, 3, 3), torch.ones(2)),
            r"got bias of shape \(2,\); expected \(3,\)",
        ),
        (
            lambda: conv2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3)),
            r'in "valid" mode the kernel \(3, 3\) must fit',
        ),
        (
            lambda: correlate2d(torch.ones(5, 5), torch.ones(2, 2), mode="wide"),
            r"mode='wide'; expected one of valid, same, full",
        ),
        (
            lambda: correlate2d(torch.ones(5, 5), torch.ones(2, 2), method="magic"),
            r"method='magic'; expected one of auto, direct, fft",
        ),
        (
            lambda: convolve2d(torch.ones(5, 5), torch.ones(2, 2, 2)),
            r"expected a 2-D kernel w \(kh, kw\) and x \(..., H, W\)",
        ),
    ],
    ids=["channels", "bias", "fit", "mode", "method", "kernel-dims"],
)
def test_bad_arguments_are_npgrad_errors(call, message: str) -> None:
    with pytest.raises(npgrad.NpgradError, match=message):
        call()


def test_conv2d_layer_matches_nn_conv2d_layout_and_initialisation() -> None:
    torch.manual_seed(0)
    ours = Conv2d(3, 8, 5)
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(3, 8, 5)
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    assert Conv2d(3, 8, (3, 5), bias=False).bias is None
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(
        ours(x), F.conv2d(x, ours.weight.flip((-2, -1)), ours.bias), atol=1e-5, rtol=1e-5
    )


def test_conv2d_layer_trains() -> None:
    torch.manual_seed(0)
    target = Conv2d(2, 3, 3, mode="same").requires_grad_(False)
    model = Conv2d(2, 3, 3, mode="same")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        x = torch.randn(4, 2, 12, 12)
        loss = F.mse_loss(model(x), target(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


def test_threads_follow_torch() -> None:
    x = torch.randn(16, 4, 32, 32)
    w = torch.randn(4, 4, 3, 3)
    expected = conv2d(x, w)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert npgrad.num_threads() == 1
        torch.testing.assert_close(conv2d(x, w), expected)
    finally:
        torch.set_num_threads(previous)


# --- N dimensions ---------------------------------------------------------------------------

ND_CASES = [
    ((9,), (4,)),
    ((2, 9), (4,)),  # a batch of signals
    ((7, 8), (3, 2)),
    ((5, 4, 6), (2, 3, 2)),
    ((2, 5, 4), (3, 2)),  # a batch of images
    ((3, 4), (5, 6)),  # "valid" with the kernel larger in every dim: SciPy swaps the two
    ((3, 3, 3), (4, 5, 4)),
    ((6,), (6,)),
]


@pytest.mark.parametrize(("x_shape", "w_shape"), ND_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
def test_nd_ops_equal_scipy_signal(x_shape, w_shape, mode: str, method: str) -> None:
    x = np.random.default_rng(1).standard_normal(x_shape)
    w = np.random.default_rng(2).standard_normal(w_shape)
    dims = len(w_shape)
    for ours, theirs in ((convolve, scipy.signal.convolve), (correlate, scipy.signal.correlate)):
        images = x.reshape(-1, *x_shape[len(x_shape) - dims :])
        expected = np.stack([theirs(image, w, mode=mode, method="direct") for image in images])
        expected = expected.reshape(*x_shape[: len(x_shape) - dims], *expected.shape[1:])
        got = ours(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method=method)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-10, err_msg=ours.name)


@pytest.mark.parametrize(("x_shape", "w_shape"), ND_CASES[1::2])
@pytest.mark.parametrize("mode", MODES)
def test_nd_ops_to_second_order_and_in_forward_mode(x_shape, w_shape, mode: str) -> None:
    x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.float64, requires_grad=True)
    for op in (convolve, correlate):

        def call(a: torch.Tensor, b: torch.Tensor, op=op) -> torch.Tensor:
            return op(a, b, mode=mode)

        assert torch.autograd.gradcheck(call, (x, w), check_forward_ad=internals.ENABLED)
        assert torch.autograd.gradgradcheck(call, (x, w))


def test_a_larger_kernel_in_valid_mode_swaps_as_in_scipy_for_the_2d_ops_too() -> None:
    x, w = np.random.default_rng(3).standard_normal((2, 3, 4)), np.ones((5, 6))
    for ours, theirs in (
        (convolve2d, scipy.signal.convolve2d),
        (correlate2d, scipy.signal.correlate2d),
    ):
        expected = np.stack([theirs(image, w, mode="valid") for image in x])
        np.testing.assert_allclose(ours(torch.from_numpy(x), torch.from_numpy(w)).numpy(), expected)
    with pytest.raises(npgrad.NpgradError, match=r"must fit in the input \(3, 4\)"):
        convolve(torch.ones(3, 4), torch.ones(2, 6), mode="valid")  # larger in one dim only


@pytest.mark.parametrize(("layer", "twin", "sizes"), [
    (Conv1d, torch.nn.Conv1d, (20,)),
    (Conv3d, torch.nn.Conv3d, (6, 5, 7)),
])  # fmt: skip
def test_conv1d_and_conv3d_layers_match_nn(layer, twin, sizes) -> None:
    torch.manual_seed(0)
    ours = layer(2, 3, 3, mode="same")
    torch.manual_seed(0)
    theirs = twin(2, 3, 3, padding=1)
    assert {name for name, _ in ours.named_parameters()} == {"weight", "bias"}
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    x = torch.randn(2, 2, *sizes)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight.flip(tuple(range(2, 2 + len(sizes)))))
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["same", "full"])
def test_boundaries_equal_scipy_to_second_order(boundary: str, mode: str) -> None:
    rng = np.random.default_rng(4)
    fillvalue = 1.5 if boundary == "fill" else 0.0
    for ours, theirs in (
        (correlate2d, scipy.signal.correlate2d),
        (convolve2d, scipy.signal.convolve2d),
    ):
        for x_shape, w_shape in (((2, 5, 6), (3, 2)), ((4, 4), (4, 5)), ((3, 3), (6, 7))):
            x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
            config = {"mode": mode, "boundary": boundary, "fillvalue": fillvalue}
            each = [theirs(i, w, **config) for i in x.reshape(-1, *x_shape[-2:])]
            expected = np.stack(each).reshape(*x_shape[:-2], *each[0].shape)
            got = ours(torch.from_numpy(x), torch.from_numpy(w), **config)
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
        a = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda p, q, op=ours, c=config: op(p, q, **c), (a, b))
        assert torch.autograd.gradgradcheck(lambda p, q, op=ours, c=config: op(p, q, **c), (a, b))


def test_an_unknown_boundary_is_named() -> None:
    with pytest.raises(
        npgrad.NpgradError,
        match=r'"scipy::convolve2d": boundary=\'circular\'; expected "fill", "wrap" or "symm"',
    ):
        convolve2d(torch.ones(4, 4), torch.ones(2, 2), mode="same", boundary="circular")


def _complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("real", ["neither", "x", "w"])
def test_complex_convolutions_equal_scipy_with_gradients(method: str, mode: str, real) -> None:
    # SciPy's correlations conjugate their second input (correlate2d, swapping a larger kernel
    # in "valid" mode, its first): so do these.
    rng = np.random.default_rng(5)
    cases = [
        (correlate2d, scipy.signal.correlate2d, {}),
        (convolve2d, scipy.signal.convolve2d, {}),
        (correlate, scipy.signal.correlate, {"method": "direct"}),
        (convolve, scipy.signal.convolve, {"method": "direct"}),
    ]
    for ours, theirs, extra in cases:
        for x_shape, w_shape in (((5, 6), (3, 2)), ((3, 4), (5, 6))):
            x, w = _complex(rng, *x_shape), _complex(rng, *w_shape)
            x, w = (x.real.copy() if real == "x" else x), (w.real.copy() if real == "w" else w)
            expected = theirs(x, w, mode=mode, **extra)
            got = ours(torch.from_numpy(x), torch.from_numpy(w), mode=mode, method=method)
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-10, err_msg=ours.name)
            args = (torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_())
            assert torch.autograd.gradcheck(
                lambda a, b, op=ours: op(a, b, mode=mode, method=method), args
            )


def test_complex_multi_channel_convolution_to_second_order() -> None:
    rng = np.random.default_rng(6)
    x = torch.from_numpy(_complex(rng, 2, 3, 6, 7)).requires_grad_()
    w = torch.from_numpy(_complex(rng, 4, 3, 3, 3)).requires_grad_()
    b = torch.from_numpy(_complex(rng, 4)).requires_grad_()
    for method in ("direct", "fft"):

        def layer(p, q, r, method=method):
            return conv2d(p, q, r, mode="same", method=method)

        assert torch.autograd.gradcheck(layer, (x, w, b))
        assert torch.autograd.gradgradcheck(layer, (x, w, b))
    # Against torch's own complex convolution (the kernel flipped: a true convolution).
    expected = torch.nn.functional.conv2d(x, w.flip((-2, -1)), b, padding=1)
    torch.testing.assert_close(conv2d(x, w, b, mode="same"), expected)


def test_flat_direct_variant_through_every_door() -> None:
    # Shapes the direct engine runs as flat taps (several channels, a small kernel), composed
    # with torch ops, against torch's own convolution and finite differences.
    from npgrad_scipy import _correlate as engine

    assert engine._direct_variant((2, 3, 9, 8), (4, 3, 3, 3)) == "flat"  # the padded input
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def ours(a: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.tanh(conv2d(a, k, mode="same", method="direct")).pow(2).sum()

    def theirs(a: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.conv2d(a, k.flip((-2, -1)), padding=1)).pow(2).sum()

    torch.testing.assert_close(ours(x, w), theirs(x, w))
    # .backward and autograd.grad twice
    ours(x, w).backward()
    expected = torch.autograd.grad(theirs(x, w), (x, w))
    torch.testing.assert_close((x.grad, w.grad), expected)
    gx, gw = torch.autograd.grad(ours(x, w), (x, w), create_graph=True)
    second = torch.autograd.grad(gx.sum() + gw.sum(), (x, w))
    gx_t, gw_t = torch.autograd.grad(theirs(x, w), (x, w), create_graph=True)
    torch.testing.assert_close(second, torch.autograd.grad(gx_t.sum() + gw_t.sum(), (x, w)))
    # functional.hessian and hvp
    hessian = torch.autograd.functional.hessian(lambda k: ours(x.detach(), k), w.detach())
    torch.testing.assert_close(
        hessian, torch.autograd.functional.hessian(lambda k: theirs(x.detach(), k), w.detach())
    )
    v = torch.randn_like(w)
    _, hvp = torch.autograd.functional.hvp(lambda k: ours(x.detach(), k), w.detach(), v)
    torch.testing.assert_close(hvp, (hessian.reshape(w.numel(), -1) @ v.reshape(-1)).view_as(w))
    # torch.func: grad, jacrev, jacfwd, vmap, and forward mode
    func_grad = torch.func.grad(ours, argnums=1)(x.detach(), w.detach())
    torch.testing.assert_close(func_grad, expected[1])
    jac_fwd = torch.func.jacfwd(lambda k: conv2d(x.detach(), k, mode="same"))(w.detach())
    jac_rev = torch.func.jacrev(lambda k: conv2d(x.detach(), k, mode="same"))(w.detach())
    torch.testing.assert_close(jac_fwd, jac_rev)
    batched = torch.func.vmap(lambda a: ours(a[None], w.detach()))(x.detach())
    torch.testing.assert_close(batched, torch.stack([theirs(a[None], w.detach()) for a in x]))
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(w.detach(), v)
        tangent = torch.autograd.forward_ad.unpack_dual(ours(x.detach(), dual)).tangent
    torch.testing.assert_close(tangent, (expected[1] * v).sum())
    # finite differences, first and second order
    assert torch.autograd.gradcheck(ours, (x, w), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(ours, (x, w))
