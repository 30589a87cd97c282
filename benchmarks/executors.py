"""Where a GIL-bound batch loop should run: threads, processes or a Dask cluster.

The op's forward and backward are pure-Python loops (about ``--ms`` milliseconds per batch
element, a batch of ``--batch``), which hold the GIL: threads cannot overlap them, processes
can. Each executor runs forward + backward; the times and the ratio to one thread are printed
(goal: 2 processes and the 2-worker cluster >= 1.7x one thread). Then the element time is
shrunk to find where each executor stops paying for its hand-offs (reported, not a goal).

Run: python benchmarks/executors.py [--ms 5] [--batch 64] [--repeats 5] [--no-cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import torch

import npgrad

WIDTH = 8


def _iterate(values: list[float], steps: int) -> tuple[list[float], list[float]]:
    """Apply v -> sin(v) + v / 2 ``steps`` times, carrying the derivative along."""
    slopes = [1.0] * len(values)
    for _ in range(steps):
        slopes = [s * (math.cos(v) + 0.5) for s, v in zip(slopes, values, strict=True)]
        values = [math.sin(v) + 0.5 * v for v in values]
    return values, slopes


@npgrad.op("bench_executors::iterate", signature="(n)->(n)")
def iterate(x: np.ndarray, *, steps: int) -> np.ndarray:
    return np.array(_iterate([float(v) for v in x], steps)[0])


@iterate.backward
def _(grad: np.ndarray, x: np.ndarray, *, steps: int) -> np.ndarray:
    return grad * np.array(_iterate([float(v) for v in x], steps)[1])


def calibrate(ms: float) -> int:
    """The steps that make one element's forward take about ``ms`` milliseconds."""
    values = [0.1 * k for k in range(WIDTH)]
    steps = 200
    while True:
        start = time.perf_counter()
        _iterate(values, steps)
        took = (time.perf_counter() - start) * 1e3
        if took > 20 or steps > 10**7:
            return max(1, round(steps * ms / took))
        steps *= 4


def timed(pool: Executor | None, x: torch.Tensor, steps: int) -> float:
    with npgrad.executor(pool):
        leaf = x.detach().requires_grad_()
        start = time.perf_counter()
        iterate(leaf, steps=steps).sum().backward()
        return time.perf_counter() - start


def best(
    found: dict[str, Executor | None], x: torch.Tensor, steps: int, repeats: int
) -> dict[str, float]:
    """Each executor's best time; rounds interleave them, so a busy moment hits all alike."""
    times = dict.fromkeys(found, math.inf)
    for _ in range(repeats):
        for name, pool in found.items():
            times[name] = min(times[name], timed(pool, x, steps))
    return times


@contextlib.contextmanager
def executors(cluster: bool) -> Iterator[dict[str, Executor | None]]:
    with contextlib.ExitStack() as stack:
        found: dict[str, Executor | None] = {
            "1 thread": None,
            "2 threads": stack.enter_context(ThreadPoolExecutor(2)),
            "2 processes": stack.enter_context(ProcessPoolExecutor(2)),
        }
        if cluster:
            try:
                import distributed
            except ImportError:
                print("(dask.distributed is not installed: no cluster)")
            else:
                local = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=2,
                        processes=True,
                        threads_per_worker=1,
                        dashboard_address=None,
                        host="127.0.0.1",
                        # No dashboard, and its HTTP server on a free loopback port, not 8787.
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    )
                )
                client = stack.enter_context(distributed.Client(local))
                found["2-worker cluster"] = client.get_executor()
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=float, default=5.0, help="forward time per element")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-cluster", action="store_true", help="skip the Dask cluster")
    parser.add_argument("--sizes", type=float, nargs="*", default=[2.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.linspace(-1.0, 1.0, args.batch * WIDTH, dtype=torch.float64)
    x = x.reshape(args.batch, WIDTH)
    per_ms = calibrate(1.0)
    with executors(not args.no_cluster) as found:
        # One untimed round each: worker start-up and imports are paid once, not per call.
        for pool in found.values():
            timed(pool, x[:4], 1)
        print(f"forward + backward, batch {args.batch}, about {args.ms:g} ms per element:")
        times = best(found, x, round(per_ms * args.ms), args.repeats)
        base = times["1 thread"]
        for name, took in times.items():
            print(f"  {name:<17} {took * 1e3:8.1f} ms   {base / took:5.2f}x one thread")
        scaled = [base / times[n] for n in ("2 processes", "2-worker cluster") if n in times]
        met = bool(scaled) and min(scaled) >= 1.70
        print(
            f"goal: 2 processes and the cluster >= 1.70x one thread; threads about 1x: "
            f"{'met' if met else 'NOT met'}"
        )
        print("\ncost of one chunk (8 one-element chunks each way, a trivial element):")
        for name, took in best(found, x[:8], 1, args.repeats).items():
            if found[name] is not None:
                each = took / 16
                print(f"  {name:<17} {each * 1e3:8.2f} ms per chunk")
        print("\nelement time below which an executor is slower than one thread:")
        speedups: dict[str, list[tuple[float, float]]] = {name: [] for name in found}
        for ms in args.sizes:
            steps = max(1, round(per_ms * ms))
            times = best(found, x, steps, args.repeats)
            for name, pool in found.items():
                if pool is not None:
                    speedups[name].append((ms, times["1 thread"] / times[name]))
        for name, points in speedups.items():
            if not points:
                continue
            # The cut-off: the smallest size down to which every larger size paid.
            paying = []
            for ms, ratio in sorted(points, reverse=True):
                if ratio < 1.0:
                    break
                paying.append(ms)
            figures = ", ".join(f"{ms:g} ms: {ratio:.2f}x" for ms, ratio in points)
            if not paying:
                verdict = f"does not pay at the sizes tried (from {max(args.sizes):g} ms down)"
            elif len(paying) == len(points):
                verdict = f"pays at every size tried (down to {min(paying):g} ms)"
            else:
                verdict = f"stops paying below about {min(paying):g} ms per element"
            print(f"  {name:<17} {verdict}  ({figures})")


if __name__ == "__main__":
    main()
