"""The batch loop on any concurrent.futures.Executor: threads, processes, a Dask cluster."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

import npgrad
from npgrad import _executors
from npgrad.errors import ExecutorError, NpgradError, SerializationError


@npgrad.op("test_executors::poly", signature="(n)->(n)")
def poly(x: np.ndarray, *, power: int = 3) -> np.ndarray:
    return x**power + np.sin(x)


@poly.backward
def _(grad: np.ndarray, x: np.ndarray, *, power: int = 3) -> np.ndarray:
    return grad * (power * x ** (power - 1) + np.cos(x))


@poly.jvp
def _(tangent: np.ndarray, x: np.ndarray, *, power: int = 3) -> np.ndarray:
    return tangent * (power * x ** (power - 1) + np.cos(x))


@npgrad.op("test_executors::fails_at_5", signature="()->()")
def fails_at_5(x: np.ndarray) -> np.ndarray:
    if float(x) == 5.0:
        raise ValueError("element five is bad")
    return x


@npgrad.op("test_executors::dies", signature="()->()")
def dies(x: np.ndarray) -> np.ndarray:
    if float(x) == 3.0:
        os._exit(1)
    return x


@npgrad.op("test_executors::outer", signature="(n)->()")
def outer(x: np.ndarray) -> np.ndarray:
    # An npgrad op inside a batch element: it must not wait on the executor its caller holds.
    inner = poly(torch.from_numpy(np.tile(x, (3, 1))))
    return np.asarray(inner.numpy().sum())


@npgrad.op("test_executors::numeric", signature="(n)->()")
def numeric(x: np.ndarray) -> np.ndarray:
    return np.asarray((x**2).sum() + np.prod(np.cos(x)))


numeric.numerical_gradient()


@npgrad.op("test_executors::numeric_whole")
def numeric_whole(x: np.ndarray) -> np.ndarray:
    return np.cumsum(np.sin(x))


numeric_whole.numerical_gradient()


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            host="127.0.0.1",
            # No dashboard, and its HTTP server on a free loopback port, not 8787.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client.get_executor()


def _x() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 7 * 3, dtype=torch.float64).reshape(7, 3).requires_grad_()


def _same_as_threads(pool: Executor) -> None:
    x = _x()
    expected = poly(x, power=2)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    tangent = torch.ones_like(x)
    _, expected_jvp = torch.func.jvp(lambda t: poly(t, power=2), (x.detach(),), (tangent,))
    with npgrad.executor(pool):
        got = poly(x, power=2)
        (got_grad,) = torch.autograd.grad(got.sum(), x)
        _, got_jvp = torch.func.jvp(lambda t: poly(t, power=2), (x.detach(),), (tangent,))
        assert torch.autograd.gradcheck(lambda t: poly(t, power=2), (x,))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=0)
    torch.testing.assert_close(got_jvp, expected_jvp, rtol=0, atol=0)


def test_default_is_threads_and_blocks_nest(processes: ProcessPoolExecutor) -> None:
    assert _executors.current("test_executors::poly") is None
    with npgrad.executor(processes):
        assert _executors.current("test_executors::poly") is processes
        with npgrad.executor(None):
            assert _executors.current("test_executors::poly") is None
        assert _executors.current("test_executors::poly") is processes
    assert _executors.current("test_executors::poly") is None


def test_user_threads_match_npgrad_threads(threads: ThreadPoolExecutor) -> None:
    _same_as_threads(threads)


@pytest.mark.slow
def test_processes_match_threads(processes: ProcessPoolExecutor) -> None:
    _same_as_threads(processes)


@pytest.fixture(scope="module")
def loky_pool() -> Iterator[Executor]:
    loky = pytest.importorskip("loky")
    pool = loky.ProcessPoolExecutor(2)
    yield pool
    pool.shutdown()


@pytest.mark.slow
def test_loky_matches_threads(loky_pool: Executor) -> None:
    _same_as_threads(loky_pool)
    # loky's pool is this machine's processes: two chunks per worker, as a ProcessPoolExecutor.
    assert _executors._is_local(loky_pool)


@pytest.mark.slow
def test_loky_killed_worker_is_an_npgrad_error(loky_pool: Executor) -> None:
    with ThreadPoolExecutor(1) as caller:
        error = caller.submit(_call_dies, loky_pool).result(timeout=60)
    assert isinstance(error, ExecutorError)
    assert str(error).startswith('npgrad op "test_executors::dies": the executor ')


@pytest.mark.slow
def test_dask_cluster_matches_threads(cluster: Executor) -> None:
    _same_as_threads(cluster)


@pytest.mark.slow
def test_dask_worker_exception_names_op_and_index(cluster: Executor) -> None:
    with npgrad.executor(cluster), pytest.raises(ValueError, match="element five") as raised:
        fails_at_5(torch.arange(8.0).reshape(2, 4))
    assert any(
        '"test_executors::fails_at_5"' in n and "(1, 1)" in n for n in raised.value.__notes__
    )


@pytest.mark.slow
def test_numerical_gradient_on_processes(processes: ProcessPoolExecutor) -> None:
    x = torch.linspace(0.1, 0.9, 12, dtype=torch.float64).reshape(4, 3).requires_grad_()
    (expected,) = torch.autograd.grad(numeric(x).sum(), x)
    with npgrad.executor(processes):
        (got,) = torch.autograd.grad(numeric(x).sum(), x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["threads", pytest.param("processes", marks=pytest.mark.slow)])
def test_numerical_gradient_without_signature(kind: str, request: pytest.FixtureRequest) -> None:
    # Its perturbed evaluations are the items of the map, not elements of a batch.
    pool = request.getfixturevalue(kind)
    x = torch.linspace(0.1, 0.9, 5, dtype=torch.float64).requires_grad_()
    (expected,) = torch.autograd.grad(numeric_whole(x).sum(), x)
    with npgrad.executor(pool):
        (got,) = torch.autograd.grad(numeric_whole(x).sum(), x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_op_executor_wins_over_block(threads: ThreadPoolExecutor) -> None:
    @npgrad.op("test_executors::own_pool", signature="()->()", executor=threads)
    def own_pool(x: np.ndarray) -> np.ndarray:
        return x + 1

    with ThreadPoolExecutor(1) as other, npgrad.executor(other):
        assert _executors.current("test_executors::own_pool") is threads
        torch.testing.assert_close(own_pool(torch.zeros(3)), torch.ones(3))


@pytest.mark.slow
def test_worker_exception_names_op_and_index(processes: ProcessPoolExecutor) -> None:
    with npgrad.executor(processes), pytest.raises(ValueError, match="element five") as raised:
        fails_at_5(torch.arange(8.0).reshape(2, 4))
    notes = raised.value.__notes__
    assert notes[0] == (
        'npgrad op "test_executors::fails_at_5": raised in batch element (1, 1) of the batch '
        "dims (2, 4), on the executor ProcessPoolExecutor"
    )
    assert "element five is bad" in notes[1]


def test_thread_exception_names_op_and_index(threads: ThreadPoolExecutor) -> None:
    with npgrad.executor(threads), pytest.raises(ValueError, match="element five") as raised:
        fails_at_5(torch.arange(6.0))
    assert raised.value.__notes__[0].startswith(
        'npgrad op "test_executors::fails_at_5": raised in batch element (5,)'
    )


def _call_dies(pool: Executor) -> BaseException | None:
    with npgrad.executor(pool):
        try:
            dies(torch.arange(8.0))
        except Exception as error:
            return error
    return None


@pytest.mark.slow
def test_killed_worker_is_an_npgrad_error() -> None:
    with ProcessPoolExecutor(2) as pool, ThreadPoolExecutor(1) as caller:
        # On a thread with a deadline: a hang fails the test instead of stalling the suite.
        error = caller.submit(_call_dies, pool).result(timeout=60)
    assert isinstance(error, ExecutorError)
    assert isinstance(error, NpgradError)
    message = str(error)
    assert message.startswith('npgrad op "test_executors::dies": the executor ')
    assert "a worker died" in message
    assert "npgrad.executor(None)" in message


@pytest.mark.slow
def test_nested_ops_do_not_deadlock() -> None:
    # One worker, busy with the outer element: an inner op sent to it would wait forever.
    x = torch.linspace(0.0, 1.0, 8, dtype=torch.float64).reshape(4, 2)
    expected = outer(x)
    with ProcessPoolExecutor(1) as pool, npgrad.executor(pool):
        got = outer(x)
    torch.testing.assert_close(got, expected)


def test_nested_ops_on_one_thread_do_not_deadlock() -> None:
    x = torch.linspace(0.0, 1.0, 8, dtype=torch.float64).reshape(4, 2)
    with ThreadPoolExecutor(1) as pool, npgrad.executor(pool):
        got = outer(x)
    with npgrad.executor(None):
        torch.testing.assert_close(got, outer(x))


@pytest.mark.slow
def test_function_from_a_main_like_namespace(processes: ProcessPoolExecutor) -> None:
    # As a script's or a notebook's: a module the workers cannot import.
    main = types.ModuleType("__main__")
    source = (
        "import numpy as np, npgrad\n"
        "@npgrad.op('test_executors::from_main', signature='(n)->(n)')\n"
        "def from_main(x):\n"
        "    return np.cumsum(x) * SCALE\n"
        "SCALE = 2.0\n"
    )
    exec(compile(source, "<notebook>", "exec"), main.__dict__)
    from_main: Any = main.__dict__["from_main"]
    x = torch.arange(6.0).reshape(2, 3)
    with npgrad.executor(processes):
        got = from_main(x)
    torch.testing.assert_close(got, 2.0 * torch.cumsum(x, dim=1))


def test_unpicklable_config_is_a_serialization_error() -> None:
    class Remote(Executor):
        """Stands for a process pool: anything not a ThreadPoolExecutor is pickled."""

    import threading

    with npgrad.executor(Remote()), pytest.raises(SerializationError, match="could not be"):
        poly(torch.ones(2, 2), power=threading.Lock())  # type: ignore[arg-type]


def test_without_cloudpickle_a_local_function_asks_for_a_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cloudpickle", None)

    class Remote(Executor):
        pass

    with npgrad.executor(Remote()), pytest.raises(SerializationError) as raised:
        poly(torch.ones(2, 2))
    message = str(raised.value)
    assert 'npgrad op "test_executors::poly"' in message
    assert "define the op (and its backward) in an importable module" in message
    assert "install cloudpickle" in message


def test_not_an_executor_is_refused() -> None:
    refused = pytest.raises(TypeError, match=r"expected a concurrent\.futures\.Executor")
    with refused, npgrad.executor(4):  # type: ignore[arg-type]
        pass


@pytest.mark.slow
def test_dask_lost_worker_is_an_npgrad_error(cluster: Executor) -> None:
    # Last in the module: it kills the cluster's workers (their nannies restart them).
    with ThreadPoolExecutor(1) as caller:
        error = caller.submit(_call_dies, cluster).result(timeout=120)
    assert isinstance(error, ExecutorError)
    assert 'npgrad op "test_executors::dies"' in str(error)


def test_keyboard_interrupt_cancels_the_outstanding_chunks() -> None:
    class Interrupted(Executor):
        """A pool whose first chunk is interrupted (Ctrl-C) while the others wait their turn."""

        def __init__(self) -> None:
            self._max_workers = 2
            self.futures: list[Future[Any]] = []

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = Future()
            if not self.futures:
                future.set_exception(KeyboardInterrupt())
            self.futures.append(future)
            return future

    pool = Interrupted()
    with npgrad.executor(pool), pytest.raises(KeyboardInterrupt):
        poly(torch.ones(8, 2))
    assert len(pool.futures) == 2  # a remote engine: one chunk per worker
    assert all(future.cancelled() for future in pool.futures[1:])
