"""The benchmark scripts run (their figures are read by people, never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script in its quickest mode and return what it printed."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=check,
    )


def test_overhead_benchmark_runs() -> None:
    out = run("overhead.py", "--calls", "2", "--rounds", "2").stdout
    for name in (
        "Function",
        "custom_op",
        "npgrad",
        "goal npgrad <= 1.10x the Function",
        "cheap case",
    ):
        assert name in out


def test_conv_benchmark_runs() -> None:
    out = run("conv.py", "--quick").stdout
    for case in (
        "1. large kernel",
        "same, fwd+bwd",
        "valid, fwd+bwd",
        "3. cores",
        "4. small image",
        "5. one image",
        "6. volume",
        "7. higher order",
    ):
        assert case in out


def test_import_time_benchmark_runs() -> None:
    assert "import npgrad (after torch, numpy)" in run("import_time.py", "--runs", "1").stdout


def test_func_benchmark_runs() -> None:
    out = run("func.py", "--quick").stdout
    assert "1. vmap over 64" in out
    assert "2. compiled call" in out
    assert "goal <= 1.0x" in out


def test_device_check_runs_anywhere() -> None:
    done = run("device_check.py", check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lfilter_benchmark_runs() -> None:
    assert "lfilter, 300 samples" in run("lfilter.py", "--samples", "300").stdout


def test_spsolve_benchmark_runs() -> None:
    assert "spsolve, n = 400" in run("spsolve.py", "--side", "20").stdout


def test_numerical_benchmark_runs() -> None:
    out = run("numerical.py", "--points", "8").stdout
    for case in ("forward", "central", "complex-step", "noise 1e-8"):
        assert case in out


def test_executors_benchmark_runs() -> None:
    out = run(
        "executors.py", "--ms", "0.2", "--batch", "8", "--repeats", "1", "--sizes", "0.1"
    ).stdout
    for name in ("1 thread", "2 threads", "2 processes", "goal: 2 processes"):
        assert name in out
