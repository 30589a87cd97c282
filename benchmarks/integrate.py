"""solve_ivp's adjoint against backpropagating through a torch-written fixed-step RK4 loop.

A neural ODE (a batch of 32 states of 16, a tanh layer of 64: a flat state of 512) is
integrated over [0, 1] in N = 10^3 and 10^4 steps and a loss of its value at 11 times is
differentiated in the layer's weights. npgrad: ``solve_ivp`` with SciPy's RK45 held to N
steps by ``max_step = 1 / N`` (tolerances loose, so the step limit decides), both adjoints;
torch: RK4 with step 1 / N, autograd through the loop. Each case runs in a fresh process;
peak memory is its resident high-water mark above what it held before the case. The goal
(the issue's "memory independent of the number of steps"): backsolve's peak memory at 10^4
steps within 1.5x its peak at 10^3, while the RK4 loop's grows with the steps.

Run: python benchmarks/integrate.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

BATCH, SIZE, HIDDEN = 32, 16, 64
TIMES = 11


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def _case(kind: str, steps: int) -> dict[str, float]:
    from npgrad_scipy.integrate import solve_ivp

    torch.manual_seed(0)
    f64 = torch.float64
    w1 = (torch.randn(SIZE, HIDDEN, dtype=f64) / SIZE**0.5).requires_grad_()
    w2 = (torch.randn(HIDDEN, SIZE, dtype=f64) / HIDDEN**0.5).requires_grad_()
    y0 = torch.randn(BATCH * SIZE, dtype=f64)
    t = torch.linspace(0, 1, TIMES, dtype=f64)

    def field(t: torch.Tensor, y: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor):
        return (torch.tanh(y.reshape(BATCH, SIZE) @ w1) @ w2).reshape(-1)

    def npgrad_loss(adjoint: str) -> torch.Tensor:
        ys = solve_ivp(field, (0, 1), y0, w1, w2, t_eval=t, max_step=1 / steps, rtol=1e-2,
                       atol=1e-2, adjoint=adjoint)  # fmt: skip
        return ys.pow(2).sum()

    def rk4_loss() -> torch.Tensor:
        h = 1.0 / steps
        y, total = y0, y0.pow(2).sum()
        every = steps // (TIMES - 1)
        for i in range(steps):
            s = torch.tensor(i * h, dtype=f64)
            k1 = field(s, y, w1, w2)
            k2 = field(s + h / 2, y + h / 2 * k1, w1, w2)
            k3 = field(s + h / 2, y + h / 2 * k2, w1, w2)
            k4 = field(s + h, y + h * k3, w1, w2)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            if (i + 1) % every == 0:
                total = total + y.pow(2).sum()
        return total

    loss = rk4_loss if kind == "rk4" else (lambda: npgrad_loss(kind))
    before = _rss_kib()
    start = time.perf_counter()
    gradient = torch.autograd.grad(loss(), (w1, w2))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    norm = float(torch.cat([g.reshape(-1) for g in gradient]).norm())
    return {"seconds": elapsed, "peak_mib": max(peak - before, 0) / 1024, "norm": norm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=2, metavar=("KIND", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_case(args.case[0], int(args.case[1]))))
        return
    results: dict[tuple[str, int], dict[str, float]] = {}
    for steps in (1000, 10000):
        for kind in ("checkpointed", "backsolve", "rk4"):
            done = subprocess.run(
                [sys.executable, __file__, "--case", kind, str(steps)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[kind, steps] = json.loads(done.stdout)
    print(f"neural ODE, flat state {BATCH * SIZE}, gradient of a loss at {TIMES} times:")
    print("| steps | method | fwd+bwd | peak memory | gradient norm |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for (kind, steps), r in results.items():
        name = {"rk4": "torch RK4, backprop"}.get(kind, f"solve_ivp, {kind}")
        print(
            f"| {steps} | {name} | {r['seconds']:.2f} s | {r['peak_mib']:.0f} MiB | "
            f"{r['norm']:.6g} |"
        )
    for kind in ("checkpointed", "backsolve", "rk4"):
        small, large = results[kind, 1000], results[kind, 10000]
        growth = max(large["peak_mib"], 1) / max(small["peak_mib"], 1)
        print(f"{kind}: peak memory 10^4 / 10^3 steps = {growth:.1f}x")
    small, large = results["backsolve", 1000], results["backsolve", 10000]
    growth = max(large["peak_mib"], 1) / max(small["peak_mib"], 1)
    speed = results["rk4", 10000]["seconds"] / results["backsolve", 10000]["seconds"]
    print(
        f"backsolve at 10^4 steps: {speed:.2f}x the RK4 loop's speed; memory growth "
        f"{growth:.1f}x (goal <= 1.5x: {'met' if growth <= 1.5 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
