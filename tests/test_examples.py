"""The examples run, in a short mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_scipy_conv2d_example_learns_the_filter() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "scipy_conv2d.py"), "--steps", "200"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "Are the gradients correct: True" in done.stdout
    error = float(done.stdout.rsplit(":", 1)[1])
    assert error < 1e-2
