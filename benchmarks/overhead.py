"""Eager overhead of an npgrad op against the hand-written Function it replaces.

The tutorial's op (a 5x5 input, a 2x2 filter, forward + backward) three ways, timed interleaved in
one run so that machine noise hits all of them alike:

- Function: the tutorial's hand-written autograd.Function (the baseline);
- custom_op: the same op with torch.library.custom_op + register_autograd;
- npgrad: the same op with @npgrad.op and @op.backward.

Goals: npgrad <= 1.10x the Function, and <= 0.80x custom_op. A second, cheap case (an
elementwise op on 16 values) reports the adapter's cost above the NumPy work against the
hand-written Function's.

Run: python benchmarks/overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.signal import convolve2d, correlate2d

import npgrad

from seed import ScipyConv2dFunction


@torch.library.custom_op("bench::custom_conv2d", mutates_args=())
def custom_conv2d(input: torch.Tensor, filter: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    result = correlate2d(input.numpy(), filter.numpy(), mode="valid")
    result += bias.numpy()
    return torch.as_tensor(result, dtype=input.dtype)


def _custom_setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(*inputs)


def _custom_backward(ctx, grad_output):  # type: ignore[no-untyped-def]
    input, filter, _bias = ctx.saved_tensors
    grad_output = grad_output.numpy()
    grad_bias = np.sum(grad_output, keepdims=True)
    grad_input = convolve2d(grad_output, filter.numpy(), mode="full")
    grad_filter = correlate2d(input.numpy(), grad_output, mode="valid")
    return (
        torch.from_numpy(grad_input),
        torch.from_numpy(grad_filter).to(torch.float),
        torch.from_numpy(grad_bias).to(torch.float),
    )


custom_conv2d.register_autograd(_custom_backward, setup_context=_custom_setup)


@npgrad.op("bench::npgrad_conv2d")
def npgrad_conv2d(input, filter, bias):  # type: ignore[no-untyped-def]
    return correlate2d(input, filter, mode="valid") + bias


@npgrad_conv2d.backward
def _(grad, input, filter, bias):  # type: ignore[no-untyped-def]
    return convolve2d(grad, filter, mode="full"), correlate2d(input, grad, mode="valid"), grad


class ScaleFunction(torch.autograd.Function):
    """The hand-written Function of the cheap case: y = x * exp(x), elementwise, NumPy inside."""

    @staticmethod
    def forward(ctx, input):  # type: ignore[no-untyped-def]
        input = input.detach()
        ctx.save_for_backward(input)
        x = input.numpy()
        return torch.from_numpy(x * np.exp(x))

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        (input,) = ctx.saved_tensors
        x = input.numpy()
        return torch.from_numpy(grad_output.numpy() * (1 + x) * np.exp(x))


@npgrad.op("bench::npgrad_scale")
def npgrad_scale(x):  # type: ignore[no-untyped-def]
    return x * np.exp(x)


@npgrad_scale.backward
def _(grad, x):  # type: ignore[no-untyped-def]
    return grad * (1 + x) * np.exp(x)


def cheap_case(calls: int, rounds: int) -> dict[str, float]:
    """Return the median us per fwd+bwd call of the elementwise case, and of its NumPy work."""
    x = torch.randn(16, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(16, dtype=torch.float64)
    a, g = x.detach().numpy(), grad.numpy()
    torch.testing.assert_close(npgrad_scale(x), ScaleFunction.apply(x))

    def numpy_work() -> None:
        a * np.exp(a)
        g * (1 + a) * np.exp(a)

    cases: dict[str, Callable[[], object]] = {
        "numpy": numpy_work,
        "Function": lambda: ScaleFunction.apply(x).backward(grad),
        "npgrad": lambda: npgrad_scale(x).backward(grad),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    """Return, per implementation, the seconds per forward+backward call in each round.

    Each round times every implementation on ``calls`` calls, back to back, so that the ratios
    of one round share the machine's state of that moment.
    """
    input = torch.randn(5, 5, requires_grad=True)
    filter = torch.randn(2, 2, requires_grad=True)
    bias = torch.randn(1, 1, requires_grad=True)
    grad = torch.randn(4, 4)
    implementations: dict[str, Callable[..., torch.Tensor]] = {
        "Function": ScipyConv2dFunction.apply,
        "custom_op": custom_conv2d,
        "npgrad": npgrad_conv2d,
    }
    reference = ScipyConv2dFunction.apply(input, filter, bias)
    for name, fn in implementations.items():
        torch.testing.assert_close(fn(input, filter, bias), reference, msg=name)
    samples: dict[str, list[float]] = {name: [] for name in implementations}
    for _ in range(rounds):
        for name, fn in implementations.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn(input, filter, bias).backward(grad)
            samples[name].append((time.perf_counter() - start) / calls)
    return samples


def ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Return the median over rounds of ``name``'s time over ``baseline``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per round (100)")
    parser.add_argument("--rounds", type=int, default=200, help="interleaved rounds (200)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = measure(args.calls, args.rounds)
    print(f"{'implementation':<12} {'median us/call':>15} {'vs Function':>12} {'vs custom_op':>13}")
    for name, seconds in samples.items():
        print(
            f"{name:<12} {statistics.median(seconds) * 1e6:15.1f} "
            f"{ratio(samples, name, 'Function'):11.2f}x {ratio(samples, name, 'custom_op'):12.2f}x"
        )
    vs_function = ratio(samples, "npgrad", "Function")
    vs_custom = ratio(samples, "npgrad", "custom_op")
    ok = vs_function <= 1.10 and vs_custom <= 0.80
    print(
        f"goal npgrad <= 1.10x the Function and <= 0.80x custom_op: "
        f"{vs_function:.2f}x, {vs_custom:.2f}x -> {'met' if ok else 'NOT met'}"
    )
    cheap = cheap_case(args.calls, max(10, args.rounds // 4))
    above_function = cheap["Function"] - cheap["numpy"]
    above_npgrad = cheap["npgrad"] - cheap["numpy"]
    print(
        f"cheap case, x * exp(x) on 16 float64 values, fwd+bwd: NumPy work {cheap['numpy']:.1f} "
        f"us; above it, the hand-written Function costs {above_function:.1f} us and npgrad "
        f"{above_npgrad:.1f} us ({above_npgrad / above_function:.2f}x; reported, not a goal)"
    )


if __name__ == "__main__":
    main()
