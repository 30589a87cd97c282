"""Where the batch loop runs: npgrad's threads, or any `concurrent.futures.Executor`.

Threads suit code that releases the GIL. For pure-Python (GIL-bound) elements a
``ProcessPoolExecutor`` (or loky's) or a Dask cluster's ``Client.get_executor()`` runs them in
other processes: the batch is cut into two chunks per worker (one on a remote engine), each
chunk travels once as the element function plus its slice of the arrays (pickled with
cloudpickle, so functions from ``__main__`` or a notebook work), and the results come back in
order.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import numpy as np

from npgrad.errors import ExecutorError, SerializationError

# Chunks per worker: two, so a slow chunk leaves the other workers idle for half a share at
# most; no more, since each chunk costs its pickling and scheduling (measured by
# benchmarks/executors.py: about 0.3-0.5 ms on a process pool, 2.5-3.5 ms on a local Dask
# cluster), which elements under about 0.3 ms (processes) or 1 ms (Dask) do not repay.
_CHUNKS_PER_WORKER = 2
# Executors of this machine's threads or processes; any other is taken for a remote engine.
_LOCAL = (ThreadPoolExecutor, ProcessPoolExecutor)
# loky's process pools (joblib's too) derive from Executor, not from ProcessPoolExecutor.
_LOCAL_MODULES = ("loky", "joblib")


class _Inline:
    """The executor inside an element already running on an executor: none (npgrad's threads).

    An inner op submitting to the executor its caller runs on would wait for workers that are
    all busy waiting for it.
    """

    def __repr__(self) -> str:
        return "<inside an executor's element>"


_INLINE = _Inline()
_block: ContextVar[Executor | _Inline | None] = ContextVar("npgrad_executor", default=None)
# Op name -> the executor given to npgrad.op(..., executor=...); empty for most programs.
_by_op: dict[str, Executor] = {}


@contextlib.contextmanager
def executor(pool: Executor | None) -> Iterator[None]:
    """Run the batch loops of the ops called in this block on ``pool``.

    Blocks nest (the innermost wins); an op given its own ``executor`` keeps it.
    ``npgrad.executor(None)`` means npgrad's threads.

    Args:
        pool: a `concurrent.futures.Executor` (``ProcessPoolExecutor``, loky's, or a Dask
            ``Client.get_executor()``), or None for npgrad's threads.

    Examples:
        >>> import numpy as np, torch, npgrad
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> @npgrad.op("doc::square_each", signature="()->()")
        ... def square_each(x):
        ...     return x * x
        >>> with ThreadPoolExecutor(2) as pool, npgrad.executor(pool):
        ...     square_each(torch.arange(4.0))
        tensor([0., 1., 4., 9.])
    """
    if pool is not None and not isinstance(pool, Executor):
        raise TypeError(
            f"npgrad.executor: got {type(pool).__name__}, but expected a "
            f"concurrent.futures.Executor or None; pass a ProcessPoolExecutor, a Dask "
            f"Client.get_executor(), or None for npgrad's threads"
        )
    token = _block.set(pool)
    try:
        yield
    finally:
        _block.reset(token)


def assign(op: str, pool: Executor | None) -> None:
    """Give op ``op`` its own executor (None: it follows the blocks again)."""
    if pool is None:
        _by_op.pop(op, None)
        return
    if not isinstance(pool, Executor):
        raise TypeError(
            f'npgrad op "{op}": executor={type(pool).__name__}, but expected a '
            f"concurrent.futures.Executor or None; pass a ProcessPoolExecutor, a Dask "
            f"Client.get_executor(), or leave it out for npgrad's threads"
        )
    _by_op[op] = pool


def current(op: str) -> Executor | None:
    """Return the executor op ``op``'s batch loop runs on, or None for npgrad's threads."""
    pool = _block.get()
    if _by_op and pool is not _INLINE:
        pool = _by_op.get(op, pool)
    if pool is None or pool is _INLINE:
        return None
    assert isinstance(pool, Executor)
    return pool


def run(
    call: Callable[..., Any],
    parts: Sequence[tuple[Any, bool]],
    count: int,
    pool: Executor,
    op: str,
    batch: tuple[int, ...],
) -> list[Any]:
    """Return ``[call(*element k) for k in range(count)]``, computed on ``pool`` in chunks.

    ``parts`` holds each argument as ``(value, sliced)``: a sequence indexed by element when
    ``sliced``, else one value passed to every element.
    """
    # A remote engine (a Dask cluster) costs milliseconds a chunk: one chunk per worker there.
    per_worker = _CHUNKS_PER_WORKER if _is_local(pool) else 1
    chunks = max(1, min(count, per_worker * _workers(pool)))
    bounds = [(k * count // chunks, (k + 1) * count // chunks) for k in range(chunks)]
    local = isinstance(pool, ThreadPoolExecutor)
    futures: list[Future[Any]] = []
    try:
        for lo, hi in bounds:
            piece = [(value[lo:hi], True) if sliced else (value, False) for value, sliced in parts]
            if local:
                futures.append(pool.submit(_run_parts, call, piece, hi - lo))
            else:
                futures.append(pool.submit(_run_chunk, _dumps((call, piece, hi - lo), op)))
        results: list[Any] = []
        for (lo, hi), future in zip(bounds, futures, strict=True):
            try:
                out, error, trace = future.result()
            except Exception as lost:
                raise ExecutorError(
                    f'npgrad op "{op}": {_describe(pool)} did not return batch elements '
                    f"{lo} to {hi - 1} of the batch dims {batch} ({type(lost).__name__}: "
                    f"{lost}); a worker died (os._exit, out of memory, a crash in native code) "
                    f"or lost its connection; expected every chunk's results back; check the "
                    f"workers' logs and memory, or run the op on npgrad's threads with "
                    f"npgrad.executor(None)"
                ) from lost
            if error is not None:
                where = tuple(int(i) for i in np.unravel_index(lo + len(out), batch))
                error.add_note(
                    f'npgrad op "{op}": raised in batch element {where} of the batch dims '
                    f"{batch}, on {_describe(pool)}"
                )
                if trace:
                    error.add_note(f"the worker's traceback:\n{trace}")
                raise error
            results.extend(out)
        return results
    finally:
        # On an error or a KeyboardInterrupt the chunks not yet started need not run.
        for future in futures:
            future.cancel()


def _run_chunk(payload: bytes) -> tuple[list[Any], BaseException | None, str]:
    """Unpickle ``(call, parts, count)`` and run it: the function a worker process runs."""
    try:
        call, parts, count = pickle.loads(payload)
    except Exception as error:
        return [], _portable(error), traceback.format_exc()
    out, failure, trace = _run_parts(call, parts, count)
    return out, (None if failure is None else _portable(failure)), trace


def _run_parts(
    call: Callable[..., Any], parts: Sequence[tuple[Any, bool]], count: int
) -> tuple[list[Any], BaseException | None, str]:
    """Call ``call`` on each element; stop at the first error and return it, not raise it.

    Returned, the error reaches the caller as the element's own exception, told apart from
    the executor's failures (a lost worker), which the future raises.
    """
    token = _block.set(_INLINE)
    out: list[Any] = []
    try:
        for k in range(count):
            out.append(call(*[value[k] if sliced else value for value, sliced in parts]))
    except Exception as error:
        return out, error, traceback.format_exc()
    finally:
        _block.reset(token)
    return out, None, ""


def _portable(error: BaseException) -> BaseException:
    """The error itself when it pickles (to travel back), else a RuntimeError describing it."""
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _dumps(value: Any, op: str) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        try:
            return pickle.dumps(value)
        except Exception as error:
            raise SerializationError(
                f'npgrad op "{op}": its function could not be pickled by reference to send it '
                f"to the executor's workers ({type(error).__name__}: {error}); expected a "
                f"function importable by name in the workers; define the op (and its backward) "
                f"in an importable module, or install cloudpickle (pip install cloudpickle)"
            ) from error
    try:
        return bytes(cloudpickle.dumps(value))
    except Exception as error:
        raise SerializationError(
            f'npgrad op "{op}": its function or inputs could not be pickled to send them to '
            f"the executor's workers ({type(error).__name__}: {error}); expected a function "
            f"and config that cloudpickle can pickle; keep locks, open files and other "
            f"process-bound objects out of the function's closure and config, or run the op on "
            f"npgrad's threads with npgrad.executor(None)"
        ) from error


def _is_local(pool: Executor) -> bool:
    return isinstance(pool, _LOCAL) or type(pool).__module__.split(".")[0] in _LOCAL_MODULES


def _workers(pool: Executor) -> int:
    """How many elements ``pool`` runs at once (its workers, or a Dask cluster's threads)."""
    count = getattr(pool, "_max_workers", None)
    if isinstance(count, int) and count > 0:
        return count
    client = getattr(pool, "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            threads: dict[str, int] = client.nthreads()
            return max(1, sum(threads.values()))
    return os.cpu_count() or 1


def _describe(pool: Executor) -> str:
    return f"the executor {type(pool).__name__}"
