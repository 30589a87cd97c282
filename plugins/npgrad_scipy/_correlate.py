"""The NumPy engine behind the convolution ops: one channel-summed valid correlation, two ways.

``correlate(xp, w, method)`` takes an already padded input ``xp`` of shape (B, C, *S) and
kernels ``w`` of shape (O, C, *K), any number of spatial dims, and returns
(B, O, *(S - K + 1)), with ``out[b, o] = sum_c valid_correlation(xp[b, c], w[o, c])``. Every op
of the plugin (correlation and convolution in any number of dims, multi-channel conv1d, conv2d
and conv3d, and all their gradients) is this call on reshaped, flipped or transposed arguments.

- direct: for multi-channel kernels, one small BLAS product per tap on a shifted flat view of
  the input (no copy of windows); where that would compute too many discarded positions (a
  kernel nearly as wide as the input), sliding windows copied into columns (im2col) and one
  matrix product per chunk; single kernels as a multiply-add per tap; weight gradients (fewer
  outputs than taps) as one product per output position. Chunks run on npgrad's thread pool.
- fft: ``scipy.fft.rfftn`` of input and kernels over the spatial dims with ``workers``, a
  product per frequency summed over channels, and ``irfftn``; the transform size only needs to
  cover the input, because a valid correlation never wraps around.
- auto: whichever a cost model, calibrated on these machines, predicts is faster; where the two
  predictions are within 2x of each other, both methods are timed on the first call of those
  shapes and the faster is kept for every later call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

import npgrad

Array = np.ndarray[Any, Any]

METHODS = ("auto", "direct", "fft")

# Seconds per unit of work on the 2-core reference machine, fitted by
# `python benchmarks/conv.py --calibrate`: a multiply-add of a single-kernel tap, an element
# copied into columns and a multiply-add of the matrix product (multi-channel direct), the same
# for one product per output window (weight gradients), an element copied once and a
# multiply-add of the shifted products (weight gradients, flat), an element-log2 of a real FFT,
# a complex multiply-add of the per-frequency channel sum, and the fixed cost of an FFT call.
DIRECT_SECONDS_PER_TAP = 2.4e-10
DIRECT_SECONDS_PER_COPY = 2.7e-10
DIRECT_SECONDS_PER_MAC = 5.2e-11
WINDOW_SECONDS_PER_COPY = 0.0
WINDOW_SECONDS_PER_MAC = 4.6e-11
SHIFT_SECONDS_PER_COPY = 5.7e-10
SHIFT_SECONDS_PER_MAC = 1.1e-11
# A multiply-add of the flat-taps variant (one small matrix product per tap on a shifted
# flat view), measured on a 64 x 8 -> 8 x 130^2 layer with 3x3 kernels.
FLAT_SECONDS_PER_MAC = 4.2e-11
FFT_SECONDS_PER_POINT_LOG = 3.0e-10
FFT_SECONDS_PER_PRODUCT = 1.5e-09
FFT_SECONDS_PER_CALL = 1.2e-05
# One step of a Python loop over taps, chunks or output positions.
SECONDS_PER_PYTHON_STEP = 2.5e-06

# Elements of one im2col chunk: large enough for an efficient matrix product, small enough to
# stay in cache and to give every thread work.
_CHUNK = 1 << 17
# Points of input transform from which scipy.fft's workers pay off.
_PARALLEL_FFT = 1 << 16
# Multiply-adds of per-window products from which the thread pool pays off.
_PARALLEL_WINDOWS = 1 << 18
# How many times the taps a flat shifted window may span before copying windows pays.
_SHIFT_WASTE = 2
# How many times the valid outputs the flat-taps variant may compute (it computes every
# position of the input's inner dims, and discards those past the last valid window).
_FLAT_WASTE = 2
# Elements of one flat-taps accumulator: an L2-sized block that every tap's product adds into.
_FLAT_CHUNK = 1 << 16
# Predictions this far apart decide alone; closer ones are settled by timing both once.
_CLEAR_WIN = 2.0
# Predicted times under which "auto" times both methods a few rounds, not once: one cold
# timing of calls of a few milliseconds picks the slower method about one time in five.
_CHEAP_SECONDS = 2e-3
_CHEAP_ROUNDS = 5
_SHORT_SECONDS = 2e-2
_SHORT_ROUNDS = 3
# "auto"'s choice per (input shape, kernel shape, dtype, threads).
_measured: dict[tuple[Any, ...], str] = {}


def correlate(xp: Array, w: Array, method: str) -> Array:
    """Return the valid correlation of ``xp`` (B, C, *S) with ``w`` (O, C, *K), summed over C."""
    dtype = np.result_type(xp.dtype, w.dtype, np.float32)
    xp = xp.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    if method != "auto":
        return _METHODS[method](xp, w)
    key = (xp.shape, w.shape, dtype.str, npgrad.num_threads())
    chosen = _measured.get(key)
    if chosen is not None:
        return _METHODS[chosen](xp, w)
    direct, fft = direct_seconds(xp.shape, w.shape), fft_seconds(xp.shape, w.shape)
    if max(direct, fft) > _CLEAR_WIN * min(direct, fft):
        _measured[key] = "fft" if fft < direct else "direct"
        return _METHODS[_measured[key]](xp, w)
    # Too close to call from the model: time both (the result is needed anyway) and keep the
    # faster for every later call of these shapes, as cuDNN's benchmark mode does. A first call
    # pays one-off costs (FFT plans, allocations), and calls under a millisecond are at the
    # mercy of the scheduler: those are timed a few times and the fastest of each kept.
    slower = max(direct, fft)
    rounds = (
        _CHEAP_ROUNDS
        if slower < _CHEAP_SECONDS
        else _SHORT_ROUNDS
        if slower < _SHORT_SECONDS
        else 1
    )
    times = dict.fromkeys(("direct", "fft"), math.inf)
    results = {}
    for _ in range(rounds):
        for name in times:
            start = time.perf_counter()
            results[name] = _METHODS[name](xp, w)
            times[name] = min(times[name], time.perf_counter() - start)
    _measured[key] = min(times, key=times.__getitem__)
    return results[_measured[key]]


def measured_choice(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str | None:
    """Return the method "auto" settled on for these shapes (any dtype), or None if not yet run."""
    for (xs, ws, _, threads), chosen in list(_measured.items()):
        if xs == x_shape and ws == w_shape and threads == npgrad.num_threads():
            return chosen
    return None


def pad(x: Array, padding: tuple[int, ...]) -> Array:
    """Return (B, C, *S) ``x`` with zeros around each image (negative: elements cut).

    ``padding`` is (before, after) for each spatial dim in turn; all zeros (of any length) for
    none. The copy is spread over npgrad's threads: it is a full pass over a possibly large
    input.
    """
    if not any(padding):
        return x
    dims = x.ndim - 2
    pairs = [(padding[2 * k], padding[2 * k + 1]) for k in range(dims)]
    cut = tuple(
        slice(max(-before, 0), x.shape[2 + k] - max(-after, 0))
        for k, (before, after) in enumerate(pairs)
    )
    x = x[(..., *cut)]
    kept = [(max(before, 0), max(after, 0)) for before, after in pairs]
    sizes = x.shape[2:]
    out = np.zeros(
        (
            *x.shape[:2],
            *(n + before + after for n, (before, after) in zip(sizes, kept, strict=True)),
        ),
        dtype=x.dtype,
    )
    inner = tuple(slice(before, before + n) for n, (before, _) in zip(sizes, kept, strict=True))
    step = max(1, _CHUNK // max(x[0].size, 1))

    def copy(start: int) -> None:
        out[(slice(start, start + step), slice(None), *inner)] = x[start : start + step]

    npgrad.parallel_map(copy, range(0, x.shape[0], step))
    return out


def direct_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the direct method's time from the shapes."""
    b, c, *spatial = x_shape
    o, _, *kernel = w_shape
    out = [n - k + 1 for n, k in zip(spatial, kernel, strict=True)]
    taps = math.prod(kernel)
    work = b * math.prod(out) * taps
    variant = _direct_variant(x_shape, w_shape)
    if variant == "taps":
        passes = taps * len(_row_chunks(b, out[0], math.prod(out[1:]) * 4))
        return DIRECT_SECONDS_PER_TAP * work + SECONDS_PER_PYTHON_STEP * passes
    if variant == "shifts":
        span = _shift_span(spatial, kernel)
        return (
            SHIFT_SECONDS_PER_COPY * c * (b * math.prod(spatial) + o * span)
            + SHIFT_SECONDS_PER_MAC * b * c * o * span * math.prod(out)
            + SECONDS_PER_PYTHON_STEP * math.prod(out)
        )
    if variant == "flat":
        inner = math.prod(spatial[1:])
        chunks = b * -(-out[0] // _flat_rows(out[0], inner, o))
        return (
            FLAT_SECONDS_PER_MAC * taps * o * c * b * out[0] * inner
            + SECONDS_PER_PYTHON_STEP * taps * chunks
        )
    if variant == "windows":
        return (
            WINDOW_SECONDS_PER_COPY * work * c
            + WINDOW_SECONDS_PER_MAC * work * c * o
            + SECONDS_PER_PYTHON_STEP * math.prod(out)
        )
    steps = len(_row_chunks(b, out[0], math.prod(out[1:]) * c * taps))
    return (
        DIRECT_SECONDS_PER_COPY * work * c
        + DIRECT_SECONDS_PER_MAC * work * c * o
        + SECONDS_PER_PYTHON_STEP * steps
    )


def fft_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the FFT method's time from the shapes."""
    b, c, *spatial = x_shape
    o = w_shape[0]
    sizes = _fft_size(spatial)
    total = math.prod(sizes)
    points = total // sizes[-1] * (sizes[-1] // 2 + 1)
    transforms = (b * c + o * c + b * o) * total * math.log2(max(total, 2))
    products = b * o * c * points
    return (
        FFT_SECONDS_PER_POINT_LOG * transforms / _fft_workers(b * c * total)
        + FFT_SECONDS_PER_PRODUCT * products / _fft_workers(products)
        + FFT_SECONDS_PER_CALL
    )


def _fft_workers(work: int) -> int:
    # pocketfft starts its worker threads on every call, and so does the pool: a loss for
    # small transforms and products.
    return npgrad.num_threads() if work >= _PARALLEL_FFT else 1


def _fft_size(spatial: Sequence[int]) -> tuple[int, ...]:
    return tuple(scipy.fft.next_fast_len(n, real=True) for n in spatial)


def _direct(xp: Array, w: Array) -> Array:
    b, c, *spatial = xp.shape
    o, _, *kernel = w.shape
    out = np.empty((b, o, *(n - k + 1 for n, k in zip(spatial, kernel, strict=True))), xp.dtype)
    if out.size == 0:
        return out
    if c * math.prod(kernel) == 0:
        out.fill(0)
        return out
    variant = _direct_variant(xp.shape, w.shape)
    if variant == "shifts":
        _direct_shifts(xp, w, out)
    elif variant == "windows":
        _direct_windows(xp, w, out)
    elif variant == "taps":
        _direct_taps(xp, w, out)
    elif variant == "flat":
        _direct_flat(xp, w, out)
    else:
        _direct_columns(xp, w, out)
    return out


def _direct_variant(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    _, c, *spatial = x_shape
    o, _, *kernel = w_shape
    taps = math.prod(kernel)
    if math.prod(n - k + 1 for n, k in zip(spatial, kernel, strict=True)) < taps:
        # Fewer outputs than taps (a weight gradient: the "kernel" is an output gradient).
        return "shifts" if _shift_span(spatial, kernel) <= _SHIFT_WASTE * taps else "windows"
    if c == 1 and o == 1:
        return "taps"
    inner = math.prod(spatial[1:])
    valid = math.prod(n - k + 1 for n, k in zip(spatial[1:], kernel[1:], strict=True))
    return "flat" if inner <= _FLAT_WASTE * valid else "columns"


def _shift_span(spatial: Sequence[int], kernel: Sequence[int]) -> int:
    """Return the length of one window of the flattened input, first tap to last."""
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    return sum((k - 1) * stride for k, stride in zip(kernel, strides, strict=True)) + 1


def _row_chunks(b: int, ho: int, per_row: int) -> list[tuple[int, int, int, int]]:
    """Split (image, first output dim) space into chunks of about _CHUNK elements of work."""
    rows = max(1, min(ho, _CHUNK // max(per_row, 1)))
    images = max(1, min(b, _CHUNK // max(per_row * ho, 1))) if rows == ho else 1
    return [
        (i, min(i + images, b), r, min(r + rows, ho))
        for i in range(0, b, images)
        for r in range(0, ho, rows)
    ]


def _direct_taps(xp: Array, w: Array, out: Array) -> None:
    # One kernel: a multiply-add of a shifted view per tap, vectorised over the batch; far
    # cheaper than copying windows for a matrix-vector product.
    ho, *rest = out.shape[2:]
    kernel = w[0, 0]

    def work(chunk: tuple[int, int, int, int]) -> None:
        i0, i1, r0, r1 = chunk
        block = out[i0:i1, 0, r0:r1]
        for k, tap in enumerate(np.ndindex(kernel.shape)):
            shifted = xp[
                (
                    slice(i0, i1),
                    0,
                    slice(r0 + tap[0], r1 + tap[0]),
                    *(slice(t, t + n) for t, n in zip(tap[1:], rest, strict=True)),
                )
            ]
            if k == 0:
                np.multiply(shifted, kernel[tap], out=block)
            else:
                block += kernel[tap] * shifted

    # Chunks of about _CHUNK / 4 outputs: each tap pass then runs over an L2-sized block.
    npgrad.parallel_map(work, _row_chunks(out.shape[0], ho, math.prod(rest) * 4))


def _direct_shifts(xp: Array, w: Array, out: Array) -> None:
    # Fewer outputs than taps, the kernel nearly as large as the input: with the input's
    # spatial dims flattened, the window of every output position is one contiguous run of it,
    # shifted, if the kernel is laid out at the input's strides (zeros between its rows). Each
    # position is then a product of strided views, one per channel, without copying its window.
    b, c, *spatial = xp.shape
    o, _, *kernel = w.shape
    span = _shift_span(spatial, kernel)
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    flat = np.ascontiguousarray(xp).reshape(b, c, -1).transpose(1, 0, 2)  # (C, B, N)
    spread = np.zeros((c, o, kernel[0], *spatial[1:]), xp.dtype)
    spread[(slice(None), slice(None), *(slice(0, k) for k in kernel))] = w.swapaxes(0, 1)
    weights = spread.reshape(c, o, -1)[:, :, :span].transpose(0, 2, 1)  # (C, span, O)

    def work(position: tuple[int, ...]) -> None:
        start = sum(p * stride for p, stride in zip(position, strides, strict=True))
        products = np.matmul(flat[:, :, start : start + span], weights)  # (C, B, O)
        out[(slice(None), slice(None), *position)] = products.sum(0)

    _spread_positions(work, list(np.ndindex(out.shape[2:])), b * c * o * span)


def _spread_positions(work: Any, positions: list[tuple[int, ...]], each: int) -> None:
    """Run ``work`` per output position: on the pool, unless the products are small."""
    if each * len(positions) < _PARALLEL_WINDOWS:
        # Handing a few small products to the pool costs more than they take.
        for position in positions:
            work(position)
    else:
        npgrad.parallel_map(work, positions)


def _direct_windows(xp: Array, w: Array, out: Array) -> None:
    # Fewer outputs than taps, the kernel narrow in some dim (the flat shifts would multiply
    # mostly zeros): one matrix product per output position over its copied window.
    b, c = xp.shape[:2]
    o, _, *kernel = w.shape
    weights = w.reshape(o, c * math.prod(kernel)).T

    def work(position: tuple[int, ...]) -> None:
        window = xp[
            (
                slice(None),
                slice(None),
                *(slice(p, p + k) for p, k in zip(position, kernel, strict=True)),
            )
        ]
        out[(slice(None), slice(None), *position)] = window.reshape(b, -1) @ weights

    _spread_positions(work, list(np.ndindex(out.shape[2:])), b * weights.size)


def _flat_rows(ho: int, inner: int, o: int) -> int:
    """Rows of the first output dim per flat-taps chunk."""
    return max(1, min(ho, _FLAT_CHUNK // max(inner * o, 1)))


def _direct_flat(xp: Array, w: Array, out: Array) -> None:
    # With the spatial dims after the first flattened, the inputs under one tap for a run of
    # output rows are one contiguous stretch per channel, at the tap's offset: a (C, L) view
    # that BLAS reads in place, without copying windows (im2col). Each tap adds one
    # (O, C) x (C, L) product into an accumulator over every inner position, and the positions
    # past the last valid window (where the stretch wraps into the next row) are dropped.
    # About 3x faster than columns for a 3x3 layer: the windows are never copied.
    b, c, first, *rest = xp.shape
    o, _, *kernel = w.shape
    ho = out.shape[2]
    inner = math.prod(rest)
    strides = [math.prod(rest[d + 1 :]) for d in range(len(rest))]
    # The last valid window of a row starts this far before the row's end: the flat stretch
    # can stop there, inside the input, even for the last rows.
    reach = sum((k - 1) * stride for k, stride in zip(kernel[1:], strides, strict=True))
    flat = xp.reshape(b, c, first * inner)
    # Each tap: its offset in the flat input, and its (O, C) weights.
    taps = [
        (
            tap[0] * inner + sum(t * s for t, s in zip(tap[1:], strides, strict=True)),
            np.ascontiguousarray(w[(slice(None), slice(None), *tap)]),
        )
        for tap in np.ndindex(*kernel)
    ]
    rows = _flat_rows(ho, inner, o)
    valid = tuple(slice(0, n) for n in out.shape[3:])

    def work(chunk: tuple[int, int]) -> None:
        n, r0 = chunk
        r1 = min(r0 + rows, ho)
        length = (r1 - r0) * inner - reach
        acc = np.empty((o, (r1 - r0) * inner), xp.dtype)
        acc[:, length:] = 0
        head = acc[:, :length]
        base = r0 * inner
        for k, (offset, weight) in enumerate(taps):
            stretch = flat[n, :, base + offset : base + offset + length]
            if k == 0:
                np.matmul(weight, stretch, out=head)
            else:
                head += weight @ stretch
        out[n, :, r0:r1] = acc.reshape(o, r1 - r0, *rest)[(slice(None), slice(None), *valid)]

    npgrad.parallel_map(work, [(n, r) for n in range(b) for r in range(0, ho, rows)])


def _direct_columns(xp: Array, w: Array, out: Array) -> None:
    # Windows copied into columns (im2col) and one matrix product per chunk.
    b, c = xp.shape[:2]
    o, _, *kernel = w.shape
    dims = len(kernel)
    ho, *rest = out.shape[2:]
    columns = w.reshape(o, c * math.prod(kernel)).T
    # One view of every window, (B, *out, C, *K), sliced per chunk: building it per chunk
    # costs more than copying a small chunk.
    windows = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + dims)))
    windows = windows.transpose(0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims))

    def work(chunk: tuple[int, int, int, int]) -> None:
        i0, i1, r0, r1 = chunk
        block = windows[i0:i1, r0:r1].reshape(-1, columns.shape[0])
        result = (block @ columns).reshape(i1 - i0, r1 - r0, *rest, o)
        out[i0:i1, :, r0:r1] = np.moveaxis(result, -1, 1)

    npgrad.parallel_map(work, _row_chunks(b, ho, math.prod(rest) * columns.shape[0]))


def _fft(xp: Array, w: Array) -> Array:
    b, c, *spatial = xp.shape
    o, _, *kernel = w.shape
    out = tuple(n - k + 1 for n, k in zip(spatial, kernel, strict=True))
    if b * o * math.prod(out) == 0 or c * math.prod(kernel) == 0:
        return np.zeros((b, o, *out), dtype=xp.dtype)
    shape = _fft_size(spatial)
    axes = tuple(range(2, xp.ndim))
    workers = _fft_workers(b * c * math.prod(shape))
    complex_values = xp.dtype.kind == "c"
    if complex_values:
        # Full transforms; the kernel enters as conj(FFT(conj(w))), so that the product below
        # correlates with w itself, not its conjugate.
        x_hat = scipy.fft.fftn(xp, s=shape, axes=axes, workers=workers)
        w_hat = scipy.fft.fftn(np.conj(w), s=shape, axes=axes, workers=workers)
    else:
        x_hat = scipy.fft.rfftn(xp, s=shape, axes=axes, workers=workers)
        w_hat = scipy.fft.rfftn(w, s=shape, axes=axes, workers=workers)
    product = np.empty((b, o, *x_hat.shape[2:]), dtype=x_hat.dtype)

    def multiply(rows: slice) -> None:
        # The conjugate kernel transform makes the circular convolution a correlation.
        xs, ws = x_hat[:, :, rows], np.conj(w_hat[:, :, rows])
        if c == 1 and o == 1:
            np.multiply(xs, ws, out=product[:, :, rows])
        else:
            # One (B, C) x (C, O) product per frequency, batched over frequencies.
            product[:, :, rows] = np.moveaxis(
                np.matmul(np.moveaxis(xs, (0, 1), (-2, -1)), np.moveaxis(ws, (0, 1), (-1, -2))),
                (-2, -1),
                (0, 1),
            )

    height = x_hat.shape[2]
    step = -(-height // _fft_workers(b * o * c * x_hat[0, 0].size))
    npgrad.parallel_map(multiply, [slice(r, r + step) for r in range(0, height, step)])
    inverse = scipy.fft.ifftn if complex_values else scipy.fft.irfftn
    result: Array = inverse(product, s=shape, axes=axes, workers=workers)
    cropped = result[(slice(None), slice(None), *(slice(0, n) for n in out))]
    return np.ascontiguousarray(cropped, dtype=xp.dtype)


_METHODS = {"direct": _direct, "fft": _fft}
