"""Errors: every one an NpgradError and the built-in exception a caller would expect."""

from __future__ import annotations

import npgrad
from npgrad.errors import (
    CheckError,
    DefinitionError,
    GradientError,
    InputError,
    MissingBackwardError,
    NotTwiceDifferentiableError,
    OutputError,
    UnknownOpError,
)


def test_errors_are_npgrad_errors_and_builtin_ones() -> None:
    pairs = [
        (DefinitionError, ValueError),
        (UnknownOpError, LookupError),
        (InputError, TypeError),
        (OutputError, TypeError),
        (GradientError, ValueError),
        (MissingBackwardError, RuntimeError),
        (NotTwiceDifferentiableError, RuntimeError),
        (CheckError, AssertionError),
    ]
    for cls, builtin in pairs:
        assert issubclass(cls, npgrad.NpgradError)
        assert issubclass(cls, builtin)
        assert cls.__doc__
