"""npgrad_scipy's demo, run by `npgrad demo` through the plugin's entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from npgrad.cli import main

pytestmark = pytest.mark.slow


def test_demo_learns_the_hidden_kernel_and_draws_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    picture = tmp_path / "demo.png"
    assert main(["demo", "--steps", "200", "--picture", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "gradcheck (20x20 double input, eps=1e-6, atol=1e-4): True" in out
    assert "npgrad.check: scipy::scipy_conv2d: finite passed, gradcheck passed" in out
    assert "recovered: OK" in out


def test_demo_fails_loudly_when_learning_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["demo", "--steps", "1", "--picture", str(tmp_path / "x.png")]) == 1
    assert "FAILED: expected an error below" in capsys.readouterr().out
