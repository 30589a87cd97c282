"""How accurate are numerical gradients? Against analytic ones, on smooth test functions.

For each method of ``op.numerical_gradient`` and each function, the largest relative error of
the gradient (of the sum of squares of the output, at 64 random points in float64, relative to
the gradient's largest element) against torch's analytic gradient of a torch twin, and the
error npgrad.check estimates. A noisy function (relative noise 1e-8 on every evaluation) shows
why finite differences need smooth, deterministic code: npgrad.check fails it.

Run: python benchmarks/numerical.py [--points N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import npgrad

FUNCTIONS = {
    "sin(x) exp(y)": (lambda x, y: np.sin(x) * np.exp(y), lambda x, y: torch.sin(x) * torch.exp(y)),
    "x / (1 + y^2)": (lambda x, y: x / (1 + y**2), lambda x, y: x / (1 + y**2)),
    "log cosh(x y)": (
        lambda x, y: np.log(np.cosh(x * y)),
        lambda x, y: torch.log(torch.cosh(x * y)),
    ),
    "x^3 y (large)": (lambda x, y: 1e3 * x**3 * y, lambda x, y: 1e3 * x**3 * y),
}
METHODS = ("forward", "central", "complex-step")


def error(method: str, forward, twin, points: int, noise: float = 0.0) -> tuple[float, float]:
    def noisy(x, y):
        rng = np.random.default_rng(abs(hash(x.tobytes())) % 2**32)
        return forward(x, y) * (1 + noise * rng.standard_normal(np.shape(x))) if noise else (
            forward(x, y)
        )  # fmt: skip

    name = f"bench::{method.replace('-', '_')}_{abs(hash((twin, noise)))}"
    op = npgrad.op(name)(noisy)
    op.numerical_gradient(method)
    torch.manual_seed(0)
    x = torch.randn(points, dtype=torch.float64, requires_grad=True)
    y = torch.randn(points, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad((op(x, y) ** 2).sum(), (x, y))
    expected = torch.autograd.grad((twin(x, y) ** 2).sum(), (x, y))
    # Relative to the gradient's scale, as the estimate is.
    measured = max(
        float((g - e).abs().max() / e.abs().max()) for g, e in zip(got, expected, strict=True)
    )
    try:
        report = npgrad.check(op, x.detach()[:8], y.detach()[:8])
    except npgrad.errors.CheckError:
        return measured, float("nan")  # gradcheck itself refuses the noisy gradient
    estimated = float(report.verdicts["numerical"].rsplit(" ", 1)[-1])
    return measured, estimated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=64)
    args = parser.parse_args()
    print("largest relative error against the analytic gradient (estimated by npgrad.check)")
    print(f"{'function':<28}" + "".join(f"{m:>26}" for m in METHODS))
    rows = [(label, *pair, 0.0) for label, pair in FUNCTIONS.items()]
    rows.append(("sin(x) exp(y), noise 1e-8", *FUNCTIONS["sin(x) exp(y)"], 1e-8))
    for label, forward, twin, noise in rows:
        cells = []
        for method in METHODS:
            if noise and method == "complex-step":
                cells.append(f"{'(not analytic)':>26}")
                continue
            measured, estimated = error(method, forward, twin, args.points, noise)
            note = "check fails" if estimated != estimated else f"est {estimated:.0e}"
            cells.append(f"{measured:>12.1e} ({note})")
        print(f"{label:<28}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
