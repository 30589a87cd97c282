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
