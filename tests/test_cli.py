"""The npgrad command line: list, check, demo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import npgrad
from npgrad.cli import main


def test_list_shows_every_op_with_its_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header, _rule, *rows = out.splitlines()
    assert header.split() == ["op", "signature", "backward", "examples", "plugin"]
    conv = next(row for row in rows if row.startswith("scipy::conv2d "))
    assert "(input, weight, bias=None, *, mode='valid', method='auto')" in conv
    assert conv.split()[-3:] == ["tensor", "6", "scipy"]
    seed = next(row for row in rows if row.startswith("scipy::scipy_conv2d "))
    assert seed.split()[-3:] == ["numpy", "1", "scipy"]


def test_check_named_ops_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "scipy::scipy_conv2d", "scipy::correlate2d"]) == 0
    captured = capsys.readouterr()
    assert "[1/4] scipy::scipy_conv2d example 0 ... ok" in captured.err
    assert "[4/4] scipy::correlate2d example 2 ... ok" in captured.err
    assert "gradcheck passed, gradgradcheck passed" in captured.out
    assert captured.out.rstrip().endswith("4 passed, 0 failed")


def test_check_fails_on_a_wrong_op(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    @npgrad.op(name)
    def wrong(x):
        return x * 2

    @wrong.backward
    def _(grad, x):
        return grad  # should be 2 * grad

    wrong.example(lambda: ((torch.randn(3),), {}))
    assert main(["check", name]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {name} example 0: CheckError" in out
    assert out.rstrip().endswith("0 passed, 1 failed")


def test_check_of_an_unknown_or_example_less_op_says_so(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "nowhere::nothing"]) == 2
    assert 'no op is registered under the name "nowhere::nothing"' in capsys.readouterr().err

    @npgrad.op(name)
    def bare(x):
        return x

    assert main(["check", name]) == 2
    assert f"{name} declare no example inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_check_all_passes_on_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npgrad.cli", "check"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 failed" in done.stdout
    # Progress lines only: no warning or traceback that is not the user's business.
    assert [line for line in done.stderr.splitlines() if not line.startswith("[")] == []


@pytest.mark.slow
def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npgrad.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in done.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"npgrad {npgrad.__version__}"


def test_check_suggests_the_namespaced_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "kv"]) == 2
    assert "did you mean 'scipy::kv'?" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "-1"], "argument --steps: expected a whole number of steps >= 1, got '-1'"),
        (["--picture", "no/such/folder/demo.png"], "the folder 'no/such/folder' does not exist"),
        (["--picture", "demo.gif"], "expected a file name ending in one of .png, .pdf"),
    ],
    ids=["steps", "folder", "extension"],
)
def test_demo_arguments_are_refused_before_training(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        status = main(["demo", *argv])
    except SystemExit as done:  # argparse's own refusal
        status = done.code
    assert status == 2
    err = capsys.readouterr()
    assert message in err.err
    assert "Traceback" not in err.err
    assert "Learning" not in err.out


@pytest.mark.slow
def test_demo_into_a_log_has_no_progress_redraws_nor_notices(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npgrad.cli", "demo", "--picture", str(tmp_path / "d.png")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stdout + done.stderr
    assert done.stderr == ""
    assert "at the first step" in done.stdout
