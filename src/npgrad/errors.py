"""Errors npgrad raises.

Every message follows one order: what happened, which op and input, what was expected and what
was got, and how to fix it. Each class also derives from the built-in exception a caller would
catch without knowing npgrad (``TypeError`` for a wrong kind of value, and so on).
"""

from __future__ import annotations

__all__ = [
    "CheckError",
    "ConvergenceError",
    "DefinitionError",
    "ExecutorError",
    "GradientError",
    "InputError",
    "MissingBackwardError",
    "NonFiniteError",
    "NotTwiceDifferentiableError",
    "NpgradError",
    "OutputError",
    "PluginWarning",
    "SerializationError",
    "UnknownOpError",
]


class NpgradError(Exception):
    """Base class of every error npgrad raises."""


class DefinitionError(NpgradError, ValueError):
    """An op is defined wrongly: a bad or taken name, or a backward that does not fit it."""


class UnknownOpError(NpgradError, LookupError):
    """No op is registered under the name asked for."""


class InputError(NpgradError, TypeError):
    """An op was called with an input it cannot take: wrong kind, complex, or on another device."""


class OutputError(NpgradError, TypeError):
    """A forward returned something that is not an array or a tuple of arrays of a usable dtype."""


class GradientError(NpgradError, ValueError):
    """A backward returned the wrong number of gradients, or one of the wrong shape or kind."""


class MissingBackwardError(NpgradError, RuntimeError):
    """A gradient was asked of an op that has no backward registered."""


class NonFiniteError(NpgradError, FloatingPointError):
    """Under torch's anomaly mode, an op's output or gradient holds NaN or Inf."""


class NotTwiceDifferentiableError(NpgradError, RuntimeError):
    """A second derivative was asked of an op whose backward is written in NumPy."""


class ConvergenceError(NpgradError, RuntimeError):
    """A solver (optimiser, root finder, integrator, linear solve) did not converge."""


class ExecutorError(NpgradError, RuntimeError):
    """An executor running an op's batch loop lost a worker or failed to return its results."""


class SerializationError(NpgradError, TypeError):
    """An op's function or inputs could not be pickled to send them to an executor's workers."""


class CheckError(NpgradError, AssertionError):
    """`npgrad.check` found an op whose gradients, dtypes or values are wrong."""


class PluginWarning(UserWarning):
    """A plugin failed to load; the others still load (a warning, not an error)."""
