"""npgrad_scipy._correlate: the direct and FFT engines and the choice between them."""

from __future__ import annotations

import numpy as np
import pytest


def test_auto_settles_close_calls_by_timing_and_keeps_the_choice() -> None:
    from npgrad_scipy import _correlate as engine

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 200, 200))
    w = rng.standard_normal((1, 1, 7, 7))
    direct, fft = engine.direct_seconds(x.shape, w.shape), engine.fft_seconds(x.shape, w.shape)
    assert max(direct, fft) < 2 * min(direct, fft)  # a close call for the model
    expected = engine.correlate(x, w, "direct")
    np.testing.assert_allclose(engine.correlate(x, w, "auto"), expected, atol=1e-9)
    assert engine.measured_choice(x.shape, w.shape) in ("direct", "fft")
    np.testing.assert_allclose(engine.correlate(x, w, "auto"), expected, atol=1e-9)


def reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Channel-summed valid correlations, one scipy.signal.correlate per image and kernel."""
    from scipy.signal import correlate

    return np.array(
        [
            [
                sum(correlate(image[k], kernel[k], mode="valid") for k in range(len(image)))
                for kernel in w
            ]
            for image in x
        ]
    )


# (x shape, w shape, the direct variant it takes); the last of each pair is large enough to
# run on the thread pool.
VARIANTS = [
    ((2, 1, 9, 8), (1, 1, 3, 2), "taps"),
    ((2, 3, 9, 8), (4, 3, 3, 2), "flat"),
    ((3, 2, 7, 6, 5), (2, 2, 2, 3, 2), "flat"),
    ((2, 3, 17), (4, 3, 5), "flat"),
    ((16, 8, 66, 66), (8, 8, 3, 3), "flat"),
    ((2, 3, 9, 8), (4, 3, 3, 6), "columns"),
    ((3, 2, 7, 6, 5), (2, 2, 2, 4, 4), "columns"),
    ((4, 8, 60, 60), (4, 8, 3, 40), "columns"),
    ((2, 3, 10, 9), (4, 3, 9, 7), "shifts"),
    ((2, 3, 9, 8, 7), (2, 3, 8, 6, 7), "shifts"),
    ((8, 16, 70, 70), (4, 16, 67, 66), "shifts"),
    ((2, 3, 12, 20), (2, 3, 11, 4), "windows"),
    ((8, 16, 70, 70), (4, 16, 69, 20), "windows"),
    ((1, 2, 40), (3, 2, 38), "shifts"),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "variant"), VARIANTS)
def test_every_direct_variant_correlates_complex_values_unconjugated(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], variant: str
) -> None:
    from npgrad_scipy import _correlate as engine

    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape) + 1j * rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape) + 1j * rng.standard_normal(w_shape)
    # scipy.signal.correlate conjugates its second argument; the engine does not.
    expected = reference(x, np.conj(w))
    np.testing.assert_allclose(engine.correlate(x, w, "direct"), expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize(("x_shape", "w_shape", "variant"), VARIANTS)
def test_every_direct_variant_equals_scipy(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], variant: str
) -> None:
    from npgrad_scipy import _correlate as engine

    assert engine._direct_variant(x_shape, w_shape) == variant
    rng = np.random.default_rng(0)
    # A transposed view: the engine must not assume contiguous inputs.
    x = rng.standard_normal(x_shape[1::-1] + x_shape[2:]).swapaxes(0, 1)
    w = rng.standard_normal(w_shape)
    expected = reference(x, w)
    np.testing.assert_allclose(engine.correlate(x, w, "direct"), expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(engine.correlate(x, w, "fft"), expected, rtol=1e-8, atol=1e-8)
