"""The ``npgrad`` command: ``npgrad demo``, ``npgrad list``, ``npgrad check [NAME ...]``."""

from __future__ import annotations

import argparse
import inspect
import sys
import time
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from npgrad._op import get, ops
from npgrad.checking import check
from npgrad.errors import NpgradError, PluginWarning
from npgrad.plugins import failed_plugins, load_plugin, load_plugins, plugin_of


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``npgrad`` command line and return its exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(
        prog="npgrad", description="NumPy/SciPy functions as differentiable PyTorch ops."
    )
    parser.add_argument("--version", action="version", version=f"npgrad {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="walk through PyTorch's NumPy/SciPy extension tutorial with npgrad"
    )
    demo.add_argument(
        "--plugin", default="scipy", help="the plugin whose demo to run (scipy, the default)"
    )
    demo.add_argument("--steps", type=_positive, default=300, help="gradient-descent steps (300)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument(
        "--picture",
        default="demo.png",
        help=f"picture to write, with matplotlib: {', '.join(_PICTURES)} (demo.png)",
    )
    commands.add_parser("list", help="list the registered ops of every plugin")
    checker = commands.add_parser(
        "check", help="run npgrad.check on every op's examples (or on the named ops)"
    )
    checker.add_argument("names", nargs="*", metavar="NAME", help="ops to check (default: all)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        problem = _picture_problem(args.picture)
        if problem is not None:
            print(f"npgrad demo: --picture {args.picture}: {problem}", file=sys.stderr)
            return 2
        try:
            plugin = load_plugin(args.plugin)
        except NpgradError as error:
            print(f"npgrad demo: {error}", file=sys.stderr)
            return 2
        run = getattr(plugin, "demo", None)
        if run is None:
            print(f"npgrad demo: plugin {args.plugin!r} has no demo", file=sys.stderr)
            return 2
        status: int = run(steps=args.steps, seed=args.seed, picture=args.picture)
        return status
    with warnings.catch_warnings():
        # Reported below, in the command's own output.
        warnings.simplefilter("ignore", PluginWarning)
        load_plugins()
    for name, cause in failed_plugins().items():
        print(f"npgrad: plugin {name!r} failed to load ({cause})", file=sys.stderr)
    if args.command == "list":
        return list_ops()
    status = check_ops(args.names)
    if failed_plugins() and status == 0:
        print(f"{len(failed_plugins())} plugin(s) failed to load: {', '.join(failed_plugins())}")
        return 1
    return status


# What matplotlib writes without extra packages.
_PICTURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps >= 1, got {text!r}")
    return value


def _picture_problem(path: str) -> str | None:
    """Say why the demo could not write its picture to ``path``, before it trains."""
    picture = Path(path)
    if picture.suffix.lower() not in _PICTURES:
        return f"expected a file name ending in one of {', '.join(_PICTURES)}"
    if not picture.parent.is_dir():
        return f"the folder {str(picture.parent)!r} does not exist; create it first"
    return None


def _version() -> str:
    try:
        return metadata.version("npgrad")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def list_ops() -> int:
    """Print a table of every registered op; return 0."""
    rows = [("op", "signature", "backward", "examples", "plugin")]
    for name in ops():
        op = get(name)
        rows.append(
            (
                name,
                _plain_signature(op.forward),
                op._rules.backward_kind,
                str(len(op.examples)) if op.examples else "no",
                plugin_of(op._rules.module),
            )
        )
    _print_table(rows)
    return 0


def check_ops(names: Sequence[str]) -> int:
    """Check the examples of the named ops (all ops with examples when none); 1 on any failure."""
    try:
        chosen = [get(name) for name in names]
    except NpgradError as error:
        print(f"npgrad check: {error}", file=sys.stderr)
        return 2
    if not chosen:
        chosen = [op for op in map(get, ops()) if op.examples]
    missing = [op.name for op in chosen if not op.examples]
    if missing:
        print(
            f"npgrad check: {', '.join(missing)} declare no example inputs; add some with "
            f"@<op>.example",
            file=sys.stderr,
        )
        return 2
    total = sum(len(op.examples) for op in chosen)
    rows = [("op", "example", "verdicts", "seconds")]
    failures = []
    done = 0
    for op in chosen:
        for index, example in enumerate(op.examples):
            done += 1
            print(f"[{done}/{total}] {op.name} example {index} ...", end=" ", file=sys.stderr)
            start = time.perf_counter()
            try:
                args, kwargs = example()
                report = check(op, *args, **kwargs)
            except Exception as error:
                seconds = time.perf_counter() - start
                print(f"FAILED ({seconds:.2f} s)", file=sys.stderr)
                failures.append(f"{op.name} example {index}: {type(error).__name__}: {error}")
                rows.append((op.name, str(index), "FAILED", f"{seconds:.2f}"))
                continue
            print(f"ok ({report.seconds:.2f} s)", file=sys.stderr)
            verdicts = ", ".join(
                f"{check_name} {verdict}" for check_name, verdict in report.verdicts.items()
            )
            rows.append((op.name, str(index), verdicts, f"{report.seconds:.2f}"))
    _print_table(rows)
    for failure in failures:
        print(f"FAILED {failure}")
    print(f"{total - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def _plain_signature(fn: object) -> str:
    signature = inspect.signature(fn)  # type: ignore[arg-type]
    plain = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=plain, return_annotation=signature.empty))


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if k == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    sys.exit(main())
