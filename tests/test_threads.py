"""npgrad's threads follow torch's setting."""

from __future__ import annotations

import threading

import numpy as np
import torch
from threadpoolctl import threadpool_info

import npgrad


def test_parallel_map_keeps_order_and_uses_threads() -> None:
    seen = set()

    def work(n: int) -> int:
        seen.add(threading.current_thread().name)
        return n * n

    assert npgrad.parallel_map(work, range(50)) == [n * n for n in range(50)]
    if torch.get_num_threads() > 1:
        assert all(name.startswith("npgrad") for name in seen)


def test_one_thread_runs_inline_and_blas_follows_torch() -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        names = npgrad.parallel_map(lambda _: threading.current_thread().name, range(4))
        assert set(names) == {threading.current_thread().name}
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas
        assert all(n == 1 for n in blas)
    finally:
        torch.set_num_threads(previous)
    npgrad.parallel_map(np.sum, [np.ones(3)])
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert all(n == previous for n in blas)
