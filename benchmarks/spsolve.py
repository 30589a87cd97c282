"""spsolve on the 5-point Laplacian of a 100x100 grid (n = 10^4), forward + backward, against
torch.linalg.solve on the same matrix made dense, in one run (goal: at least 100x faster).

Run: python benchmarks/spsolve.py [--side N]
"""

from __future__ import annotations

import argparse
import time

import torch

from npgrad_scipy.sparse import laplacian, spsolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=100)
    args = parser.parse_args()
    n = args.side**2
    sparse = laplacian(args.side).requires_grad_()
    dense = sparse.detach().to_dense().requires_grad_()
    b = torch.randn(n, dtype=torch.float64, requires_grad=True)

    def ours() -> None:
        spsolve(sparse, b).sum().backward()

    def theirs() -> None:
        torch.linalg.solve(dense, b).sum().backward()

    times = {}
    for name, fn in (("npgrad", ours), ("dense", theirs)):
        start = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - start
    ratio = times["dense"] / times["npgrad"]
    print(
        f"spsolve, n = {n}, fwd+bwd: npgrad {times['npgrad'] * 1e3:.1f} ms, dense "
        f"torch.linalg.solve {times['dense'] * 1e3:.0f} ms -> {ratio:.0f}x faster "
        f"(goal >= 100x: {'met' if ratio >= 100 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
