"""npgrad_scipy._correlate: the direct and FFT engines and the choice between them."""

from __future__ import annotations

import numpy as np


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
