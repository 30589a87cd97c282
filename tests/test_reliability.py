"""Reliability: anomaly mode, threads, memory, serialisation."""

from __future__ import annotations

import gc
import io
import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import npgrad
from npgrad.errors import NonFiniteError


@pytest.fixture
def log_op(name: str) -> npgrad.Op:
    @npgrad.op(name)
    def log(x):
        return np.log(x)

    @log.backward
    def _(g, x):
        return g / x

    return log


def test_anomaly_mode_names_the_op_and_output(log_op: npgrad.Op, name: str) -> None:
    x = torch.tensor([1.0, -1.0])
    with np.errstate(invalid="ignore"):
        assert torch.isnan(log_op(x)).any()  # outside anomaly mode: torch's own behaviour
        with (
            torch.autograd.set_detect_anomaly(True),
            pytest.raises(
                NonFiniteError,
                match=rf'npgrad op "{name}": output 0 of the forward has 1 NaN or Inf value',
            ),
        ):
            log_op(x)


def test_anomaly_mode_names_the_gradient(log_op: npgrad.Op, name: str) -> None:
    x = torch.tensor([1.0, 0.0], requires_grad=True)
    with np.errstate(divide="ignore"), torch.autograd.set_detect_anomaly(True):
        y = log_op(x + 1)  # finite forward
        with pytest.raises(
            NonFiniteError, match=rf'npgrad op "{name}": the gradient for input "x"'
        ):
            (y * torch.tensor([0.0, np.inf])).sum().backward()


def test_eight_threads_get_correct_gradients(log_op: npgrad.Op) -> None:
    errors = []
    barrier = threading.Barrier(8)

    def work(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        barrier.wait()
        for _ in range(50):
            x = (torch.rand(16, generator=generator, dtype=torch.float64) + 0.5).requires_grad_()
            log_op(x).sum().backward()
            if not torch.allclose(x.grad, 1 / x.detach()):
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_many_calls_do_not_grow_memory_or_leave_cycles(log_op: npgrad.Op) -> None:
    x = (torch.rand(64, 64) + 0.5).requires_grad_()
    for _ in range(200):  # warm-up: allocator pools, caches
        log_op(x).sum().backward()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(5000):
        log_op(x).sum().backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (after - before) * 1024 < 20 * 2**20  # ru_maxrss is in KiB on Linux
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            log_op(x).sum().backward()
        gc.collect()
        found = [obj for obj in gc.garbage if type(obj).__module__.startswith("npgrad")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert found == []


@pytest.mark.slow
def test_a_whole_model_saved_with_torch_save_loads_in_a_fresh_process(tmp_path: Path) -> None:
    from npgrad_scipy import Conv2d

    model = torch.nn.Sequential(Conv2d(1, 2, 3, mode="same"), torch.nn.ReLU())
    path = tmp_path / "model.pt"
    torch.save(model, path)
    x = torch.randn(1, 1, 6, 6)
    expected = model(x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"0.weight", "0.bias"}
    code = (
        "import sys, torch, npgrad_scipy\n"
        f"model = torch.load({str(path)!r}, weights_only=False)\n"
        "x = torch.load(sys.argv[1])\n"
        "torch.save(model(x), sys.argv[2])\n"
    )
    torch.save(x, tmp_path / "x.pt")
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")], check=True
    )
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected)
