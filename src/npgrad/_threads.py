"""How many threads npgrad's work uses: torch's setting, applied to BLAS and to a thread pool.

NumPy's BLAS and npgrad's pool would each start a thread per core on their own; inside a torch
program that oversubscribes the cores. npgrad follows ``torch.get_num_threads()`` instead: one
big BLAS call gets that many BLAS threads, and work spread over the pool gets one BLAS thread
per pool thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_controller: Any = None
_blas_threads: int | None = None


def num_threads() -> int:
    """Return the number of threads npgrad's work may use: ``torch.get_num_threads()``.

    Examples:
        >>> import torch, npgrad
        >>> npgrad.num_threads() == torch.get_num_threads()
        True
    """
    return torch.get_num_threads()


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Apply ``fn`` to each item on npgrad's thread pool; return the results in order.

    Worth it for functions that release the GIL (NumPy's larger array operations, BLAS,
    ``scipy.fft``); ``scipy.signal.convolve2d``, for one, holds it. With one thread or one item
    it runs inline. BLAS gets one thread per pool thread meanwhile, so cores are not
    oversubscribed.

    Args:
        fn (Callable): the function to apply.
        items (Iterable): its arguments, one call each.

    Examples:
        >>> import npgrad
        >>> npgrad.parallel_map(lambda n: n * n, range(5))
        [0, 1, 4, 9, 16]
    """
    items = list(items)
    threads = min(num_threads(), len(items))
    if threads <= 1:
        set_blas_threads(num_threads())
        return [fn(item) for item in items]
    # One task per thread over a contiguous share of the items: a task per item would cost a
    # future and a wake-up each, which dominates when items are small cache-sized chunks.
    shares = [
        items[k * len(items) // threads : (k + 1) * len(items) // threads] for k in range(threads)
    ]
    set_blas_threads(1)
    try:
        done = _executor(num_threads()).map(lambda share: [fn(item) for item in share], shares)
        return [result for share in done for result in share]
    finally:
        set_blas_threads(num_threads())


def set_blas_threads(count: int) -> None:
    """Set the BLAS libraries' thread count (through threadpoolctl), when it changes."""
    global _blas_threads, _controller
    if count == _blas_threads:
        return
    with _lock:
        if _controller is None:
            # Imported here: threadpoolctl inspects every loaded library, which costs
            # milliseconds that `import npgrad` should not pay; by the first call, the libraries
            # the op's code uses (NumPy's and SciPy's BLAS) are loaded.
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        _controller.limit(limits=count, user_api="blas")
        _blas_threads = count


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="npgrad")
        return _pool
