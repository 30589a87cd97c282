"""minimize's implicit gradient against unrolling 100 gradient-descent steps in torch.

The minimiser of ``f(x) = x^T A x / 2 - b^T x + |x|^4 / 4`` (n = 50, A symmetric positive
definite with condition number 100) is differentiated in b, for the loss ``sum(x*)``. The
true gradient solves ``H v = 1`` with the Hessian at a minimiser found to rounding. npgrad:
``minimize`` (trust-exact), the gradient by the implicit function theorem; torch: 100 steps
of gradient descent with step 1 / L from 0, backpropagated. Reported: time of forward and
backward, and the relative error of each gradient against the true one.

Run: python benchmarks/optimize.py
"""

from __future__ import annotations

import time

import torch

from npgrad_scipy.optimize import minimize

N, CONDITION, STEPS = 50, 100.0, 100
F64 = torch.float64


def objective(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ a @ x - b @ x + 0.25 * (x @ x) ** 2


def main() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(N, N, dtype=F64))
    a = q @ torch.diag(torch.logspace(0, torch.log10(torch.tensor(CONDITION)), N, dtype=F64)) @ q.T
    b = torch.randn(N, dtype=F64)

    def implicit() -> torch.Tensor:
        leaf = b.clone().requires_grad_()
        x = minimize(objective, torch.zeros(N, dtype=F64), a, leaf, method="trust-exact")
        (gradient,) = torch.autograd.grad(x.sum(), leaf)
        return gradient

    def unrolled() -> torch.Tensor:
        leaf = b.clone().requires_grad_()
        x = torch.zeros(N, dtype=F64)
        # The step 1 / L for L the largest curvature along the way: A's, plus the quartic's.
        step = 1.0 / (CONDITION + 3 * float(torch.linalg.solve(a, b).norm()) ** 2)
        for _ in range(STEPS):
            x = x - step * (a @ x - leaf + (x @ x) * x)
        (gradient,) = torch.autograd.grad(x.sum(), leaf)
        return gradient

    # The truth: the Hessian at the minimiser, solved densely.
    x_star = minimize(objective, torch.zeros(N, dtype=F64), a, b, method="trust-exact").detach()
    for _ in range(3):  # Newton steps, to rounding
        gradient = torch.func.grad(lambda x: objective(x, a, b))(x_star)
        hessian = torch.func.hessian(lambda x: objective(x, a, b))(x_star)
        x_star = x_star - torch.linalg.solve(hessian, gradient)
    hessian = torch.func.hessian(lambda x: objective(x, a, b))(x_star)
    truth = torch.linalg.solve(hessian, torch.ones(N, dtype=F64))

    rows = []
    for name, fn in (("npgrad minimize, implicit", implicit), ("torch, 100 GD steps", unrolled)):
        fn()  # warm
        start = time.perf_counter()
        for _ in range(5):
            gradient = fn()
        elapsed = (time.perf_counter() - start) / 5
        error = float((gradient - truth).norm() / truth.norm())
        rows.append((name, elapsed, error))
    print(f"minimiser of a quartic-regularised quadratic, n = {N}, condition {CONDITION:g}:")
    print("| method | fwd+bwd | relative gradient error |")
    print("| --- | ---: | ---: |")
    for name, elapsed, error in rows:
        print(f"| {name} | {elapsed * 1e3:.1f} ms | {error:.1e} |")
    (_, ours, our_error), (_, theirs, their_error) = rows
    print(
        f"implicit: {theirs / ours:.2f}x the unrolled loop's speed, error {our_error:.1e} "
        f"against {their_error:.1e} (goal: error below 1e-8 where unrolling's is above 1e-3: "
        f"{'met' if our_error < 1e-8 and their_error > 1e-3 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
