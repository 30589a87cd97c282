"""What `import npgrad` costs once torch and NumPy (which it needs) are imported.

Each run is a fresh interpreter with ``-X importtime``; the figure is npgrad's own cumulative
import time (its modules and what they import that torch had not), median over runs. Loading
the plugins, which imports SciPy, is timed in the same process.

Run: python benchmarks/import_time.py [--runs N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

CODE = (
    "import time, torch, numpy\n"
    "import npgrad\n"
    "start = time.perf_counter(); npgrad.load_plugins()\n"
    "print(time.perf_counter() - start)\n"
)


def one_run() -> tuple[float, float]:
    """Return (seconds importing npgrad, seconds loading plugins) of one fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CODE], capture_output=True, text=True, check=True
    )
    line = next(ln for ln in done.stderr.splitlines() if re.search(r"\|\s*npgrad$", ln))
    cumulative_us = int(line.split("|")[1])
    return cumulative_us / 1e6, float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    imports = statistics.median(r[0] for r in runs)
    plugins = statistics.median(r[1] for r in runs)
    print(f"import npgrad (after torch, numpy): {imports * 1e3:6.1f} ms")
    print(f"npgrad.load_plugins():              {plugins * 1e3:6.1f} ms (imports SciPy)")


if __name__ == "__main__":
    main()
