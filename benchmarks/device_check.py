"""Run the CUDA tests and the conv benchmarks on a machine with a GPU.

On a GPU machine: ``python benchmarks/device_check.py`` runs the tests marked ``cuda`` and
then ``benchmarks/conv.py`` (npgrad computes on the CPU; the baselines run on the GPU too, so
the figures show what the device round trip costs). Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]


def main() -> int:
    if not torch.cuda.is_available():
        print("device_check: no CUDA device here; nothing to run")
        return 0
    print(f"device_check: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", str(ROOT / "tests")], check=False
    )
    bench = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "conv.py")], check=False)
    return tests.returncode or bench.returncode


if __name__ == "__main__":
    sys.exit(main())
