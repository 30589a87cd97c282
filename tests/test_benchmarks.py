"""The benchmark scripts run (their figures are read by people, never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_overhead_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "overhead.py"), "--calls", "2", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for name in ("seed", "custom_op", "npgrad", "goal npgrad <= 1.10x seed"):
        assert name in done.stdout


def test_conv_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "conv.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for case in ("1. large kernel", "2. real layer", "3. cores", "4. small image", "5. one image"):
        assert case in done.stdout


def test_import_time_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "import_time.py"), "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "import npgrad (after torch, numpy)" in done.stdout


def test_func_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "func.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "1. vmap over 64" in done.stdout
    assert "2. compiled call" in done.stdout


def test_device_check_runs_anywhere() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "device_check.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lfilter_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "lfilter.py"), "--samples", "300"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "lfilter, 300 samples" in done.stdout


def test_spsolve_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "spsolve.py"), "--side", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "spsolve, n = 400" in done.stdout
