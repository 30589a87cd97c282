"""Core-dimension signatures (NumPy's gufunc syntax) and the loop over batch dims.

``"(m,n),(n)->(m)"`` names each input's and output's core dims; whatever leads them is batch,
broadcast across inputs as in NumPy. A function written for core dims alone is looped over the
broadcast batch (on npgrad's threads, or the executor `npgrad.executor` gives), and the output
shapes follow from the signature whenever every output dim is named by an input.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npgrad import _executors
from npgrad._threads import parallel_map
from npgrad.errors import DefinitionError, InputError, OutputError

_DIMS = r"\((?:\s*\w+\s*(?:,\s*\w+\s*)*)?\)"
_LIST = rf"{_DIMS}(?:\s*,\s*{_DIMS})*"
_SIGNATURE = re.compile(rf"^\s*({_LIST})\s*->\s*({_LIST})\s*$")

Shape = tuple[int, ...]
# Elements of one call's inputs from which the batch loop runs on npgrad's threads.
_THREADED_CALL = 1 << 14
# Distinct input shapes whose binding each signature remembers.
_BOUND_CACHE = 64


@dataclass(frozen=True)
class Signature:
    """A parsed core-dimension signature."""

    text: str
    inputs: tuple[tuple[str, ...], ...]
    outputs: tuple[tuple[str, ...], ...]
    # Input shapes -> (batch shape, output shapes): a call with shapes seen before skips binding.
    _bound: dict[tuple[Shape | None, ...], tuple[Shape, list[Shape] | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def bind_outputs(
        self, op: str, shapes: tuple[Shape | None, ...]
    ) -> tuple[Shape, list[Shape] | None]:
        """Return the batch shape and the output shapes (None where unknown) for ``shapes``."""
        known = self._bound.get(shapes)
        if known is None:
            batch, sizes = self.bind(op, shapes)
            known = batch, self.output_shapes(batch, sizes)
            if len(self._bound) >= _BOUND_CACHE:
                self._bound.clear()
            self._bound[shapes] = known
        return known

    def bind(self, op: str, shapes: Sequence[Shape | None]) -> tuple[Shape, dict[str, int]]:
        """Return the broadcast batch shape and the size of each named dim, checking both.

        ``shapes`` has one entry per input; None for an input that is no array (a number).
        """
        sizes: dict[str, int] = {}
        batches = []
        for position, (core, shape) in enumerate(zip(self.inputs, shapes, strict=True)):
            if shape is None:
                continue
            if len(shape) < len(core):
                raise InputError(
                    f'npgrad op "{op}": input {position} has shape {shape}, but the signature '
                    f'"{self.text}" gives it {len(core)} core dims {core}; expected at least '
                    f"{len(core)} dims; add the missing dims"
                )
            lead = len(shape) - len(core)
            for name, size in zip(core, shape[lead:], strict=True):
                if (name.isdigit() and int(name) != size) or sizes.setdefault(name, size) != size:
                    expected = int(name) if name.isdigit() else sizes[name]
                    raise InputError(
                        f'npgrad op "{op}": core dim "{name}" of input {position} has size {size}, '
                        f'but the signature "{self.text}" makes it {expected}; expected inputs '
                        f"whose named dims agree"
                    )
            batches.append(shape[:lead])
        if all(batch == batches[0] for batch in batches):
            # The usual case, and np.broadcast_shapes costs microseconds on every call.
            return (batches[0] if batches else ()), sizes
        try:
            return tuple(np.broadcast_shapes(*batches)), sizes
        except ValueError:
            raise InputError(
                f'npgrad op "{op}": the batch dims {batches} of the inputs do not broadcast; '
                f"expected batch dims that broadcast as in NumPy"
            ) from None

    def output_shapes(self, batch: Shape, sizes: dict[str, int]) -> list[Shape] | None:
        """Return each output's shape, or None when an output dim is named by no input."""
        shapes = []
        for core in self.outputs:
            dims = []
            for name in core:
                if name.isdigit():
                    dims.append(int(name))
                elif name in sizes:
                    dims.append(sizes[name])
                else:
                    return None
            shapes.append(batch + tuple(dims))
        return shapes


@functools.lru_cache(maxsize=256)
def regrouped(
    text: str, inputs: tuple[tuple[str, ...], ...], outputs: tuple[tuple[str, ...], ...]
) -> Signature:
    """Return the signature ``text`` with other core dims (a gradient rule's arguments)."""
    # One object per grouping, so that its bindings are cached across calls like the op's own.
    return Signature(text, inputs, outputs)


def parse(text: str, op: str) -> Signature:
    """Parse ``"(n),(n)->(n)"``; raise DefinitionError naming the op if it is malformed."""
    match = _SIGNATURE.match(text) if isinstance(text, str) else None
    if match is None:
        raise DefinitionError(
            f'npgrad op "{op}": signature {text!r} is not of the form "(n),(n)->(n)"; use NumPy\'s '
            f'gufunc syntax: comma-separated core dims per input, "->", the same per output'
        )

    def groups(part: str) -> tuple[tuple[str, ...], ...]:
        return tuple(
            tuple(name.strip() for name in group.split(",") if name.strip())
            for group in re.findall(r"\(([^)]*)\)", part)
        )

    return Signature(text.strip(), groups(match.group(1)), groups(match.group(2)))


def loop(
    fn: Callable[..., Any],
    signature: Signature,
    op: str,
    arrays: Sequence[Any],
    config: dict[str, Any],
    cores: Sequence[tuple[str, ...]] | None = None,
    batch: Shape | None = None,
    *,
    results: Sequence[tuple[str, ...]] | None = None,
    residuals: bool = False,
) -> Any:
    """Call ``fn`` once per batch element of ``arrays`` and stack its results.

    ``cores`` gives the core dims of each argument (default: the signature's inputs); arguments
    that are not arrays pass through unchanged. ``batch`` is the broadcast batch shape when the
    caller has bound the signature already. Returns what ``fn`` returns (an array or a tuple of
    arrays, None allowed for a whole output), with the batch dims in front; ``results`` gives
    their core dims (default: the signature's outputs), for an empty batch. With ``residuals``,
    ``fn`` returns ``(result, residuals)``, and so does the loop: the results stacked, and the
    residuals in an object array shaped like the batch.
    """
    cores = signature.inputs if cores is None else cores
    if batch is None:
        shapes = tuple([a.shape if isinstance(a, np.ndarray) else None for a in arrays])
        regroup = regrouped(signature.text, tuple(cores), signature.outputs)
        batch = regroup.bind_outputs(op, shapes)[0]
    if not batch:
        return fn(*arrays, **config)
    count = math.prod(batch)
    if count == 0:
        return _empty(signature, op, arrays, cores, results, batch, residuals)
    # Every array as (count, *core): a view (a broadcast one for an input short of batch dims;
    # only flattening several broadcast batch dims copies). Iterating those in `map` costs less
    # per element than any Python loop.
    pool = _executors.current(op)
    columns: list[Any] = []
    per_call = 0
    for a, core in zip(arrays, cores, strict=True):
        if not isinstance(a, np.ndarray):
            columns.append(itertools.repeat(a, count) if pool is None else a)
            continue
        core_shape = a.shape[a.ndim - len(core) :]
        per_call += math.prod(core_shape)
        lead = a.shape[: a.ndim - len(core)]
        if lead != batch:
            a = np.broadcast_to(a, batch + core_shape)
        if len(batch) != 1:
            a = a.reshape(count, *core_shape)
        columns.append(a)
    call = functools.partial(fn, **config) if config else fn
    # Threads pay off when each call has real work (and releases the GIL); for small core
    # shapes the hand-off costs more than the call, so those run in a plain loop.
    if pool is not None:
        # An executor chosen by the caller runs every batch, small or not: its elements are
        # GIL-bound Python more often than large arrays.
        parts = [(c, True) if isinstance(c, np.ndarray) else (c, False) for c in columns]
        results = _executors.run(call, parts, count, pool, op, batch)
    elif per_call >= _THREADED_CALL:
        results = parallel_map(lambda args: call(*args), zip(*columns, strict=True))
    else:
        results = []
        try:
            # extend() appends as it goes: on an error, the results so far say where it was.
            results.extend(map(call, *columns))
        except Exception as error:
            where = tuple(int(i) for i in np.unravel_index(len(results), batch))
            if hasattr(error, "add_note"):
                error.add_note(f"in batch element {where} of the batch dims {batch}")
            raise
    if residuals:
        kept = np.empty(count, dtype=object)
        for k, (_, residual) in enumerate(results):
            kept[k] = residual
        return _assemble([result for result, _ in results], batch, op), kept.reshape(batch)
    return _assemble(results, batch, op)


def _assemble(results: list[Any], batch: Shape, op: str) -> Any:
    if isinstance(results[0], (tuple, list)):
        return tuple(_stack([r[k] for r in results], batch, op, k) for k in range(len(results[0])))
    return _stack(results, batch, op, 0)


def _empty(
    signature: Signature,
    op: str,
    arrays: Sequence[Any],
    cores: Sequence[tuple[str, ...]],
    results: Sequence[tuple[str, ...]] | None,
    batch: Shape,
    residuals: bool,
) -> Any:
    """The results of a loop over an empty batch: zeros shaped by the named core dims."""
    results = signature.outputs if results is None else results
    shapes = [np.shape(a) if isinstance(a, np.ndarray) else None for a in arrays]
    _, sizes = Signature(signature.text, tuple(cores), tuple(results)).bind(op, shapes)
    found = Signature(signature.text, tuple(cores), tuple(results)).output_shapes(batch, sizes)
    if found is None:
        raise InputError(
            f'npgrad op "{op}": the batch dims {batch} hold no element, and the signature '
            f'"{signature.text}" names result dims that no input gives; expected a non-empty '
            f"batch, or a signature whose output dims all appear among the inputs'"
        )
    dtype = np.result_type(*[a for a in arrays if isinstance(a, np.ndarray)], np.float64)
    zeros = tuple(np.zeros(shape, dtype=dtype) for shape in found)
    result = zeros[0] if len(zeros) == 1 else zeros
    return (result, np.empty(batch, dtype=object)) if residuals else result


def _stack(parts: list[Any], batch: Shape, op: str, output: int) -> Any:
    if parts[0] is None:
        if all(part is None for part in parts):
            return None
    else:
        # np.array stacks equal-shaped arrays at a third of np.stack's cost; what it cannot
        # stack into numbers (ragged shapes, a None among arrays) is refused below.
        try:
            stacked = np.array(parts)
        except ValueError:
            stacked = None
        if stacked is not None and stacked.dtype.kind != "O":
            return stacked if len(batch) == 1 else stacked.reshape(batch + stacked.shape[1:])
    first = _shape_of(parts[0])
    ragged = next(((k, _shape_of(p)) for k, p in enumerate(parts) if _shape_of(p) != first), None)
    if ragged is None:
        # Equal shapes NumPy could not stack into numbers: its own result, checked downstream.
        stacked = np.stack(parts)
        return stacked.reshape(batch + stacked.shape[1:])
    k, other = ragged
    raise OutputError(
        f'npgrad op "{op}": result {output} for batch element {k} has {other}, but element 0 '
        f"gave {first}; expected the same shape for every batch element; return arrays shaped "
        f"by the signature's core dims alone"
    )


def _shape_of(part: Any) -> str:
    return "None" if part is None else f"shape {np.shape(part)}"
