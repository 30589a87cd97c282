"""Costs of composing with PyTorch: vmap over a signature op, and a compiled call.

1. vmap over a batch of 64 on an op with a signature, against a hand-written Python loop calling
   the same NumPy function on the same data (goal: at most 1.2x the loop's time).
2. A compiled function calling an npgrad op, against the same op (NumPy forward, NumPy
   backward) written with ``torch.library.custom_op``, per call, forward and backward (goal: at
   most 1.0x); a custom_op whose backward is written in torch is shown beside them.

Run: python benchmarks/func.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import npgrad


def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The NumPy function under test: a small dense solve."""
    return np.linalg.solve(a, b)


# The op's forward is the very function the hand-written loop calls.
solve_op = npgrad.op("bench::solve", signature="(n,n),(n)->(n)")(solve)


def solve_vjp(g: np.ndarray, a: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the solve's gradients in A and b from the output gradient g and the solution x."""
    gb = np.linalg.solve(a.T, g)
    return -np.outer(gb, x), gb


@solve_op.backward
def _(g, a, b):  # type: ignore[no-untyped-def]
    return solve_vjp(g, a, solve(a, b))


def solve_custom_op(name: str) -> torch.library.CustomOpDef:
    """Return the NumPy solve as a torch.library custom op named ``name``, with its fake."""

    @torch.library.custom_op(name, mutates_args=())
    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(solve(a.numpy(force=True), b.numpy(force=True)))

    @op.register_fake
    def _(a, b):  # type: ignore[no-untyped-def]
        return torch.empty_like(b)

    return op


solve_custom = solve_custom_op("bench::solve_custom")


def _setup(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.save_for_backward(inputs[0], output)


def _backward(ctx, g):  # type: ignore[no-untyped-def]
    # A NumPy backward cannot be traced by torch.compile: the baseline's is written in torch.
    a, x = ctx.saved_tensors
    gb = torch.linalg.solve(a.T, g)
    return -torch.outer(gb, x), gb


solve_custom.register_autograd(_backward, setup_context=_setup)


# The same op as npgrad's: NumPy forward and NumPy backward, the backward a second custom op
# (the way torch.library runs NumPy code in a compiled backward).
solve_numpy = solve_custom_op("bench::solve_numpy")


@torch.library.custom_op("bench::solve_numpy_backward", mutates_args=())
def solve_numpy_backward(
    g: torch.Tensor, a: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_a, grad_b = solve_vjp(g.numpy(force=True), a.numpy(force=True), x.numpy(force=True))
    return torch.from_numpy(grad_a), torch.from_numpy(grad_b)


@solve_numpy_backward.register_fake
def _(g, a, x):  # type: ignore[no-untyped-def]
    return torch.empty_like(a), torch.empty_like(x)


def _numpy_backward(ctx, g):  # type: ignore[no-untyped-def]
    a, x = ctx.saved_tensors
    return solve_numpy_backward(g, a, x)


solve_numpy.register_autograd(_numpy_backward, setup_context=_setup)


def median_time(fn: Callable[[], object], repeats: int, number: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def vmap_case(repeats: int, n: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, n, n)) + n * np.eye(n)
    b = rng.standard_normal((64, n))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def loop() -> np.ndarray:
        return np.stack([solve(a[i], b[i]) for i in range(64)])

    def loop_inside(a_: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        loop()
        return b_.clone()

    # Made once, as a user would: vmap's wrapper is not the op's cost.
    vmapped = torch.func.vmap(solve_op)
    torch_floor = torch.func.vmap(loop_inside)
    fns: dict[str, Callable[[], object]] = {
        "loop": loop,
        "batched call": lambda: solve_op(ta, tb),
        "vmap": lambda: vmapped(ta, tb),
        "vmap around the loop": lambda: torch_floor(ta, tb),
    }
    np.testing.assert_allclose(vmapped(ta, tb).numpy(), loop())
    times: dict[str, float] = {}
    for _ in range(5):  # interleaved
        for name, fn in fns.items():
            t = median_time(fn, repeats, 20)
            times[name] = min(times.get(name, t), t)
    ratio = times["vmap"] / times["loop"]
    print(
        f"1. vmap over 64 {n}x{n} solves: loop {times['loop'] * 1e6:.0f} us, npgrad batched call "
        f"{times['batched call'] * 1e6:.0f} us ({times['batched call'] / times['loop']:.2f}x), "
        f"vmap {times['vmap'] * 1e6:.0f} us ({ratio:.2f}x; goal <= 1.2x: "
        f"{'met' if ratio <= 1.2 else 'NOT met'}); torch.func.vmap around the hand loop itself: "
        f"{times['vmap around the loop'] / times['loop']:.2f}x"
    )
    return ratio


def compiled_case(repeats: int) -> float:
    a = torch.randn(8, 8, dtype=torch.float64) + 8 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    ops = {"npgrad": solve_op, "custom_op": solve_numpy, "custom_op, torch backward": solve_custom}
    compiled = {
        name: torch.compile(lambda v, op=op: op(a, v).sin().sum(), fullgraph=True)
        for name, op in ops.items()
    }
    expected = torch.autograd.grad(compiled["custom_op"](b), b)
    for name, fn in compiled.items():
        torch.testing.assert_close(torch.autograd.grad(fn(b), b), expected, msg=name)

    def step(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for _ in range(200):
            fn(b).backward()
        b.grad = None

    # Interleaved rounds: the ratio of one round shares the machine's state of that moment.
    samples: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(repeats):
        for name, fn in compiled.items():
            start = time.perf_counter()
            step(fn)
            samples[name].append((time.perf_counter() - start) / 200)
    ratio = statistics.median(
        ours / theirs for ours, theirs in zip(samples["npgrad"], samples["custom_op"], strict=True)
    )
    times = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"2. compiled call, fwd+bwd: npgrad {times['npgrad'] * 1e6:.0f} us, the same NumPy op "
        f"as torch custom_ops {times['custom_op'] * 1e6:.0f} us -> {ratio:.2f}x (goal <= 1.0x: "
        f"{'met' if ratio <= 1.0 else 'NOT met'}); a custom_op with its backward in torch "
        f"instead: {times['custom_op, torch backward'] * 1e6:.0f} us"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 15
    for n in (8, 16, 64):
        vmap_case(repeats, n)
    compiled_case(repeats)


if __name__ == "__main__":
    main()
