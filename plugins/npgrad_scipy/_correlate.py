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
- auto: whichever a cost model, calibrated on these machines, predicts is faster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

import npgrad

Array = np.ndarray[Any, Any]

METHODS = ("auto", "direct", "fft")

# Seconds per unit of work on the 2-core reference machine (benchmarks/conv.py --calibrate):
# a multiply-add of the direct method, an element-log2 of a real FFT, a complex multiply-add of
# the per-frequency channel sum. Only their ratios matter for choosing.
DIRECT_SECONDS_PER_MAC = 4.0e-11
FFT_SECONDS_PER_POINT_LOG = 2.0e-10
FFT_SECONDS_PER_PRODUCT = 1.0e-9

# Elements of one im2col chunk: large enough for an efficient matrix product, small enough to
# stay in cache and to give every thread work.
_CHUNK = 1 << 18
# Points of input transform from which scipy.fft's workers pay off.
_PARALLEL_FFT = 1 << 16


def correlate(xp: Array, w: Array, method: str) -> Array:
    """Return the valid correlation of ``xp`` (B, C, Hp, Wp) with ``w`` (O, C, kh, kw) over C."""
    if method == "auto":
        method = choose_method(xp.shape, w.shape)
    dtype = np.result_type(xp.dtype, w.dtype, np.float32)
    xp = xp.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    if method == "fft":
        return _fft(xp, w)
    return _direct(xp, w)


def choose_method(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    """Return "direct" or "fft", whichever the cost model predicts is faster for these shapes."""
    return "fft" if fft_seconds(x_shape, w_shape) < direct_seconds(x_shape, w_shape) else "direct"


def direct_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the direct method's time from the shapes."""
    b, c, hp, wp = x_shape
    o, _, kh, kw = w_shape
    return DIRECT_SECONDS_PER_MAC * b * o * c * (hp - kh + 1) * (wp - kw + 1) * kh * kw


def fft_seconds(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
    """Predict the FFT method's time from the shapes."""
    b, c, hp, wp = x_shape
    o = w_shape[0]
    fh, fw = _fft_size(hp, wp)
    points = fh * (fw // 2 + 1)
    transforms = (b * c + o * c + b * o) * fh * fw * math.log2(max(fh * fw, 2))
    return FFT_SECONDS_PER_POINT_LOG * transforms + FFT_SECONDS_PER_PRODUCT * b * o * c * points


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
    columns = w.reshape(o, c * kh * kw).T
    # Chunks of whole images and of output rows, each im2col block about _CHUNK elements.
    per_row = wo * c * kh * kw
    rows = max(1, min(ho, _CHUNK // per_row))
    images = max(1, min(b, _CHUNK // (per_row * ho))) if rows == ho else 1
    chunks = [
        (i, min(i + images, b), r, min(r + rows, ho))
        for i in range(0, b, images)
        for r in range(0, ho, rows)
    ]

    def work(chunk: tuple[int, int, int, int]) -> None:
        i0, i1, r0, r1 = chunk
        windows = sliding_window_view(xp[i0:i1, :, r0 : r1 + kh - 1], (kh, kw), axis=(2, 3))
        block = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        result = (block @ columns).reshape(i1 - i0, r1 - r0, wo, o)
        out[i0:i1, :, r0:r1] = result.transpose(0, 3, 1, 2)

    npgrad.parallel_map(work, chunks)
    return out


def _fft(xp: Array, w: Array) -> Array:
    b, c, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    if b * o * ho * wo == 0 or c * kh * kw == 0:
        return np.zeros((b, o, ho, wo), dtype=xp.dtype)
    shape = _fft_size(hp, wp)
    # pocketfft starts its worker threads on every call: a loss for small transforms.
    workers = npgrad.num_threads() if b * c * shape[0] * shape[1] >= _PARALLEL_FFT else 1
    x_hat = scipy.fft.rfft2(xp, s=shape, workers=workers)
    w_hat = np.conj(scipy.fft.rfft2(w, s=shape, workers=workers))
    if c == 1 and o == 1:
        product = x_hat * w_hat
    elif b == 1 or o == 1:
        product = np.einsum("bcxy,ocxy->boxy", x_hat, w_hat)
    else:
        # One (B, C) x (C, O) product per frequency, batched over frequencies.
        product = np.matmul(x_hat.transpose(2, 3, 0, 1), w_hat.transpose(2, 3, 1, 0)).transpose(
            2, 3, 0, 1
        )
    result: Array = scipy.fft.irfft2(product, s=shape, workers=workers)[..., :ho, :wo]
    return np.ascontiguousarray(result, dtype=xp.dtype)
