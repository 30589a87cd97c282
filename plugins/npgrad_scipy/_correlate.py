"""The NumPy engine behind the convolution ops: one channel-summed valid correlation, two ways.

``correlate(xp, w, method)`` takes an already padded input ``xp`` of shape (B, C, Hp, Wp) and
kernels ``w`` of shape (O, C, kh, kw) and returns (B, O, Hp - kh + 1, Wp - kw + 1), with
``out[b, o] = sum_c valid_correlation(xp[b, c], w[o, c])``. Every op of the plugin (single-image
correlation, convolution, multi-channel conv2d, and all their gradients) is this call on
reshaped, flipped or transposed arguments.

- direct: sliding windows copied into columns (im2col) and one BLAS matrix product per chunk;
  chunks run on npgrad's thread pool, so both the copy and the product use every core.
- fft: ``scipy.fft.rfft2`` of input and kernels with ``workers``, a product per frequency
  summed over channels, and ``irfft2``; the transform size only needs to cover the input,
  because a valid correlation never wraps around.
- auto: whichever a cost model, calibrated on these machines, predicts is faster; where the two
  predictions are within 2x of each other, both methods are timed on the first call of those
  shapes and the faster is kept for every later call.
"""

from __future__ import annotations

import math
import time
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
# for one product per output window (weight gradients), an element-log2 of a real FFT, a
# complex multiply-add of the per-frequency channel sum, and the fixed cost of an FFT call.
DIRECT_SECONDS_PER_TAP = 2.4e-10
DIRECT_SECONDS_PER_COPY = 2.7e-10
DIRECT_SECONDS_PER_MAC = 5.2e-11
WINDOW_SECONDS_PER_COPY = 1.6e-10
WINDOW_SECONDS_PER_MAC = 1.2e-10
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
# Predictions this far apart decide alone; closer ones are settled by timing both once.
_CLEAR_WIN = 2.0
# "auto"'s choice per (input shape, kernel shape, dtype, threads).
_measured: dict[tuple[Any, ...], str] = {}


def correlate(xp: Array, w: Array, method: str) -> Array:
    """Return the valid correlation of ``xp`` (B, C, Hp, Wp) with ``w`` (O, C, kh, kw) over C."""
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
    # Too close to call from the model: time both once (the result is needed anyway) and keep
    # the faster for every later call of these shapes, as cuDNN's benchmark mode does.
    times = {}
    results = {}
    for name in ("direct", "fft"):
        start = time.perf_counter()
        results[name] = _METHODS[name](xp, w)
        times[name] = time.perf_counter() - start
    _measured[key] = min(times, key=times.__getitem__)
    return results[_measured[key]]


def measured_choice(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str | None:
    """Return the method "auto" settled on for these shapes (any dtype), or None if not yet run."""
    for (xs, ws, _, threads), chosen in list(_measured.items()):
        if xs == x_shape and ws == w_shape and threads == npgrad.num_threads():
            return chosen
    return None


def pad(x: Array, padding: tuple[int, int, int, int]) -> Array:
    """Return (B, C, H, W) ``x`` with zeros around each image (negative: rows or columns cut).

    The copy is spread over npgrad's threads: it is a full pass over a possibly large input.
    """
    top, bottom, left, right = padding
    if not any(padding):
        return x
    x = x[
        ...,
        max(-top, 0) : x.shape[-2] - max(-bottom, 0),
        max(-left, 0) : x.shape[-1] - max(-right, 0),
    ]
    top, bottom, left, right = (max(p, 0) for p in padding)
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], h + top + bottom, w + left + right), dtype=x.dtype)
    step = max(1, _CHUNK // max(x[0].size, 1))

    def copy(start: int) -> None:
        out[start : start + step, :, top : top + h, left : left + w] = x[start : start + step]

    npgrad.parallel_map(copy, range(0, x.shape[0], step))
    return out


def direct_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the direct method's time from the shapes."""
    b, c, hp, wp = x_shape
    o, _, kh, kw = w_shape
    ho, wo = hp - kh + 1, wp - kw + 1
    work = b * ho * wo * kh * kw
    variant = _direct_variant(x_shape, w_shape)
    if variant == "taps":
        passes = kh * kw * len(_row_chunks(b, ho, wo * 4))
        return DIRECT_SECONDS_PER_TAP * work + SECONDS_PER_PYTHON_STEP * passes
    if variant == "outputs":
        return (
            WINDOW_SECONDS_PER_COPY * work * c
            + WINDOW_SECONDS_PER_MAC * work * c * o
            + SECONDS_PER_PYTHON_STEP * ho * wo
        )
    steps = len(_row_chunks(b, ho, wo * c * kh * kw))
    return (
        DIRECT_SECONDS_PER_COPY * work * c
        + DIRECT_SECONDS_PER_MAC * work * c * o
        + SECONDS_PER_PYTHON_STEP * steps
    )


def fft_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the FFT method's time from the shapes."""
    b, c, hp, wp = x_shape
    o = w_shape[0]
    fh, fw = _fft_size(hp, wp)
    points = fh * (fw // 2 + 1)
    transforms = (b * c + o * c + b * o) * fh * fw * math.log2(max(fh * fw, 2))
    products = b * o * c * points
    return (
        FFT_SECONDS_PER_POINT_LOG * transforms / _fft_workers(b * c * fh * fw)
        + FFT_SECONDS_PER_PRODUCT * products / _fft_workers(products)
        + FFT_SECONDS_PER_CALL
    )


def _fft_workers(work: int) -> int:
    # pocketfft starts its worker threads on every call, and so does the pool: a loss for
    # small transforms and products.
    return npgrad.num_threads() if work >= _PARALLEL_FFT else 1


def _fft_size(hp: int, wp: int) -> tuple[int, int]:
    return scipy.fft.next_fast_len(hp, real=True), scipy.fft.next_fast_len(wp, real=True)


def _direct(xp: Array, w: Array) -> Array:
    b, c, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    out = np.empty((b, o, ho, wo), dtype=xp.dtype)
    if out.size == 0:
        return out
    if c * kh * kw == 0:
        out.fill(0)
        return out
    variant = _direct_variant(xp.shape, w.shape)
    if variant == "outputs":
        _direct_outputs(xp, w, out)
    elif variant == "taps":
        _direct_taps(xp, w, out)
    else:
        _direct_columns(xp, w, out)
    return out


def _direct_variant(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    _, c, hp, wp = x_shape
    o, _, kh, kw = w_shape
    if (hp - kh + 1) * (wp - kw + 1) < kh * kw:
        return "outputs"
    return "taps" if c == 1 and o == 1 else "columns"


def _row_chunks(b: int, ho: int, per_row: int) -> list[tuple[int, int, int, int]]:
    """Split (image, output row) space into chunks of about _CHUNK elements of work each."""
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
    _, _, ho, wo = out.shape
    kh, kw = w.shape[2:]
    kernel = w[0, 0]

    def work(chunk: tuple[int, int, int, int]) -> None:
        i0, i1, r0, r1 = chunk
        block = out[i0:i1, 0, r0:r1]
        np.multiply(xp[i0:i1, 0, r0:r1, :wo], kernel[0, 0], out=block)
        for a in range(kh):
            for t in range(kw):
                if a or t:
                    block += kernel[a, t] * xp[i0:i1, 0, r0 + a : r1 + a, t : t + wo]

    # Chunks of about _CHUNK / 4 outputs: each tap pass then runs over an L2-sized block.
    npgrad.parallel_map(work, _row_chunks(out.shape[0], ho, wo * 4))


def _direct_outputs(xp: Array, w: Array, out: Array) -> None:
    # Fewer outputs than taps (a weight gradient: the "kernel" is an output gradient): one
    # matrix product per output position over its window.
    b, c = xp.shape[:2]
    o, _, kh, kw = w.shape
    _, _, ho, wo = out.shape
    weights = w.reshape(o, c * kh * kw).T

    def work(position: tuple[int, int]) -> None:
        i, j = position
        window = xp[:, :, i : i + kh, j : j + kw].reshape(b, c * kh * kw)
        out[:, :, i, j] = window @ weights

    npgrad.parallel_map(work, [(i, j) for i in range(ho) for j in range(wo)])


def _direct_columns(xp: Array, w: Array, out: Array) -> None:
    # Windows copied into columns (im2col) and one matrix product per chunk.
    b, c = xp.shape[:2]
    o, _, kh, kw = w.shape
    _, _, ho, wo = out.shape
    columns = w.reshape(o, c * kh * kw).T
    # One view of every window, (B, Ho, Wo, C, kh, kw), sliced per chunk: building it per chunk
    # costs more than copying a small chunk.
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5)

    def work(chunk: tuple[int, int, int, int]) -> None:
        i0, i1, r0, r1 = chunk
        block = windows[i0:i1, r0:r1].reshape(-1, c * kh * kw)
        result = (block @ columns).reshape(i1 - i0, r1 - r0, wo, o)
        out[i0:i1, :, r0:r1] = result.transpose(0, 3, 1, 2)

    npgrad.parallel_map(work, _row_chunks(b, ho, wo * c * kh * kw))


def _fft(xp: Array, w: Array) -> Array:
    b, c, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    if b * o * ho * wo == 0 or c * kh * kw == 0:
        return np.zeros((b, o, ho, wo), dtype=xp.dtype)
    shape = _fft_size(hp, wp)
    workers = _fft_workers(b * c * shape[0] * shape[1])
    x_hat = scipy.fft.rfft2(xp, s=shape, workers=workers)
    w_hat = scipy.fft.rfft2(w, s=shape, workers=workers)
    product = np.empty((b, o, *x_hat.shape[2:]), dtype=x_hat.dtype)

    def multiply(rows: slice) -> None:
        # The conjugate kernel transform makes the circular convolution a correlation.
        xs, ws = x_hat[:, :, rows], np.conj(w_hat[:, :, rows])
        if c == 1 and o == 1:
            np.multiply(xs, ws, out=product[:, :, rows])
        else:
            # One (B, C) x (C, O) product per frequency, batched over frequencies.
            product[:, :, rows] = np.matmul(
                xs.transpose(2, 3, 0, 1), ws.transpose(2, 3, 1, 0)
            ).transpose(2, 3, 0, 1)

    height = x_hat.shape[2]
    step = -(-height // _fft_workers(b * o * c * x_hat[0, 0].size))
    npgrad.parallel_map(multiply, [slice(r, r + step) for r in range(0, height, step)])
    result: Array = scipy.fft.irfft2(product, s=shape, workers=workers)[..., :ho, :wo]
    return np.ascontiguousarray(result, dtype=xp.dtype)


_METHODS = {"direct": _direct, "fft": _fft}
