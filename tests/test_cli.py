"""The npgrad command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from npgrad.cli import main


def test_demo_learns_the_hidden_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "gradcheck (20x20 double input, eps=1e-6, atol=1e-4): True" in out
    assert "npgrad.check: scipy::scipy_conv2d: finite passed, gradcheck passed" in out
    assert "recovered: OK" in out


def test_demo_fails_loudly_when_learning_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "1"]) == 1
    assert "FAILED: expected an error below" in capsys.readouterr().out


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npgrad.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in done.stdout
