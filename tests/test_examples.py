"""The examples run, in a short mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_scipy_conv2d_example_learns_the_filter() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "scipy_conv2d.py"), "--steps", "200"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "Are the gradients correct: True" in done.stdout
    error = float(done.stdout.rsplit(":", 1)[1])
    assert error < 1e-2


def _run_main(name: str, *args: int) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(*args)


def test_fitting_through_a_special_function_recovers_the_parameters() -> None:
    amplitude, scale = _run_main("fit_special", 300)
    assert abs(amplitude - 2.0) < 0.1
    assert abs(scale - 1.3) < 0.05


def test_deblurring_gets_closer_to_the_true_image() -> None:
    assert _run_main("deblur", 150, 32) < 0.8


def test_fitting_an_odes_rates_recovers_them(tmp_path: Path) -> None:
    figure = tmp_path / "fit.png"
    rates = _run_main("fit_ode", 60, str(figure))
    for fitted, true in zip(rates, (1.0, 0.4, 0.4, 0.1), strict=True):
        assert abs(fitted - true) < 0.03 * true
    assert figure.stat().st_size > 10_000
