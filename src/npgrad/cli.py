"""The ``npgrad`` command: ``npgrad demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``npgrad`` command line and return its exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(
        prog="npgrad", description="NumPy/SciPy functions as differentiable PyTorch ops."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="walk through PyTorch's NumPy/SciPy extension tutorial with npgrad"
    )
    demo.add_argument("--steps", type=int, default=300, help="gradient-descent steps (300)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from npgrad._demo import run

        return run(steps=args.steps, seed=args.seed)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
