"""`check`: the tests every op should pass, in one call, for op and plugin authors."""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from npgrad import _numerical
from npgrad import _torch_internals as internals
from npgrad._convert import differentiable
from npgrad._op import Op
from npgrad.errors import CheckError, NpgradError

_TOLERANCES = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}
# The checks that compare derivatives with finite differences, and the rules each one tries.
_RULES_CHECKED = {
    "gradcheck": "backward (or forward)",
    "gradgradcheck": "backward",
    "forward": "jvp (or tensor backward)",
    "forward-over-forward": "jvp (or tensor backward)",
}


@dataclass
class CheckReport:
    """What `check` found: a verdict per check ("passed" or "skipped: why") and the time taken.

    Examples:
        >>> from npgrad import CheckReport
        >>> str(CheckReport("doc::op", {"gradcheck": "passed"}, 0.5))
        'doc::op: gradcheck passed (0.50 s)'
    """

    op: str
    verdicts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        verdicts = ", ".join(f"{name} {verdict}" for name, verdict in self.verdicts.items())
        return f"{self.op}: {verdicts} ({self.seconds:.2f} s)"


def check(op: Op, *inputs: Any, **config: Any) -> CheckReport:
    """Check ``op`` on ``inputs``: gradients, second derivatives, the dtype policy, finiteness.

    Runs ``torch.autograd.gradcheck``, ``gradgradcheck`` when the op is twice differentiable,
    gradcheck of forward mode when it has one, and a second directional derivative of forward
    over forward when its forward mode is made of ops, on float64 copies of the floating
    inputs, then checks that a float32 call
    gives float32 outputs and gradients and that every output is finite. ``eps``, ``atol`` and
    ``rtol`` set gradcheck's tolerances unless the op takes config of those names.

    Args:
        op: the op to check.
        *inputs: example positional inputs (any floating dtype; copies are made).
        **config: the op's keyword config, and gradcheck tolerances.

    Raises:
        CheckError: naming the op, the check and the failing input.

    Examples:
        >>> import torch, npgrad
        >>> @npgrad.op("doc::sine")
        ... def sine(x):
        ...     import numpy as np
        ...     return np.sin(x)
        >>> @sine.backward
        ... def _(grad, x):
        ...     import numpy as np
        ...     return grad * np.cos(x)
        >>> npgrad.check(sine, torch.randn(4)).verdicts["gradcheck"]
        'passed'
    """
    tolerances: dict[str, float] = {
        key: config.pop(key, default) if key not in op._rules.config_names else default
        for key, default in _TOLERANCES.items()
    }
    report = CheckReport(op.name)
    start = time.perf_counter()
    positions_with_grad = _differentiable_positions(op, inputs)

    def run(*args: Any) -> Any:
        return op(*args, **config)

    outputs = _stage(op, "finite", lambda: run(*_copies(inputs, torch.float64, ())))
    for index, output in enumerate(_as_tuple(outputs)):
        if differentiable(output.dtype) and not bool(torch.isfinite(output).all()):
            raise CheckError(
                f'npgrad.check of op "{op.name}": output {index} has NaN or Inf values on the '
                f"example inputs; expected finite values; choose inputs inside the op's domain "
                f"or fix the forward"
            )
    report.verdicts["finite"] = "passed"

    rules = op._rules
    if not positions_with_grad:
        why = "no backward" if not rules.has_backward else "no floating input"
        for stage in ("gradcheck", "gradgradcheck", "forward", "forward-over-forward"):
            report.verdicts[stage] = f"skipped: {why}"
    else:
        double = _copies(inputs, torch.float64, positions_with_grad)
        checks: dict[str, Callable[..., bool]] = {"gradcheck": torch.autograd.gradcheck}
        if rules.tensor_backward is not None:
            checks["gradgradcheck"] = torch.autograd.gradgradcheck
        has_forward = rules.jvp is not None or rules.tensor_jvp is not None
        if has_forward or (rules.tensor_backward is not None and internals.ENABLED):
            checks["forward"] = functools.partial(
                torch.autograd.gradcheck, check_forward_ad=True, check_backward_ad=False
            )
        compressed = any(_is_sparse(v) and v.layout != torch.sparse_coo for v in inputs)
        if (
            internals.ENABLED
            and not compressed
            and (rules.tensor_jvp is not None or (rules.jvp is None and rules.tensor_backward))
        ):
            checks["forward-over-forward"] = _check_forward_over_forward
        # Sparse inputs: only their stored values are inputs, not the implicit zeros.
        sparse = any(_is_sparse(value) for value in double)
        # torch cannot compare sparse gradients with zero in its undefined-gradient test.
        masked = {"masked": True, "check_undefined_grad": False} if sparse else {}
        for stage, checker in checks.items():
            given, positions = double, positions_with_grad
            if stage != "gradcheck" and sparse:
                # torch's gradgradcheck takes no sparse gradients, nor its forward-mode check
                # sparse tangents: there, the sparse inputs are constants.
                positions = tuple(i for i in positions_with_grad if not _is_sparse(double[i]))
                given = _copies(inputs, torch.float64, positions)
            _stage(
                op,
                stage,
                lambda checker=checker, given=given: checker(
                    run, given, raise_exception=True, **tolerances, **masked
                ),
                positions,
            )
            report.verdicts[stage] = "passed"
        report.verdicts.setdefault(
            "gradgradcheck", "skipped: NumPy backward is differentiable once"
        )
        report.verdicts.setdefault(
            "forward",
            "skipped: no jvp"
            if rules.tensor_backward is None
            else "skipped: forward mode from a tensor backward needs torch's internals",
        )
        report.verdicts.setdefault(
            "forward-over-forward",
            "skipped: needs torch's internals"
            if not internals.ENABLED
            else "skipped: torch.func takes no sparse CSR (or CSC, BSR) tensors"
            if compressed
            else "skipped: no jvp"
            if "skipped" in report.verdicts["forward"]
            else "skipped: the jvp is NumPy, differentiable once",
        )

    if rules.numerical is not None and positions_with_grad:
        report.verdicts["numerical"] = _numerical_verdict(op, inputs, config, positions_with_grad)
    single = _copies(inputs, torch.float32, positions_with_grad)
    _check_float32(op, run, single, positions_with_grad)
    report.verdicts["dtype"] = "passed"
    report.seconds = time.perf_counter() - start
    return report


def _numerical_verdict(
    op: Op, inputs: tuple[Any, ...], config: dict[str, Any], positions: tuple[int, ...]
) -> str:
    """Say how the op's numerical gradient is computed, and its error estimated here."""
    rules = op._rules
    arrays = [
        value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        for value in _copies(inputs, torch.float64, ())
    ]
    needs = [i in positions for i in range(len(inputs))]
    error = _stage(
        op,
        "numerical",
        lambda: _numerical.estimate_error(rules, rules.numerical, arrays, config, needs),
    )
    _numerical.measured_errors[op.name] = error
    return f"{rules.numerical.method} differences, estimated relative error {error:.1g}"


def _check_forward_over_forward(
    run: Callable[..., Any],
    inputs: tuple[Any, ...],
    *,
    raise_exception: bool,
    eps: float,
    atol: float,
    rtol: float,
    **_: Any,
) -> bool:
    """Compare ``jvp(jvp(run))`` along two random directions with central differences.

    gradcheck cannot nest forward mode, so this checks one second directional derivative:
    with ``h(x) = J(x) t``, the analytic ``J_h(x) s`` against ``(h(x + eps s) - h(x - eps s))
    / 2 eps``, in float64.
    """
    positions = [i for i, v in enumerate(inputs) if isinstance(v, torch.Tensor) and v.requires_grad]
    generator = torch.Generator().manual_seed(0)
    base = [v.detach() if isinstance(v, torch.Tensor) else v for v in inputs]
    t, s = (
        [torch.randn(base[i].shape, dtype=base[i].dtype, generator=generator) for i in positions]
        for _ in range(2)
    )

    def first(*moving: torch.Tensor) -> Any:
        def partial(*values: torch.Tensor) -> Any:
            args = list(base)
            for i, value in zip(positions, values, strict=True):
                args[i] = value
            return run(*args)

        return torch.func.jvp(partial, tuple(moving), tuple(t))[1]

    at = [base[i] for i in positions]
    analytic = _as_tuple(torch.func.jvp(first, tuple(at), tuple(s))[1])
    above = _as_tuple(first(*(x + eps * d for x, d in zip(at, s, strict=True))))
    below = _as_tuple(first(*(x - eps * d for x, d in zip(at, s, strict=True))))
    for k, (exact, up, down) in enumerate(zip(analytic, above, below, strict=True)):
        if not differentiable(exact.dtype):
            continue
        numeric = (up - down) / (2 * eps)
        if not torch.allclose(exact, numeric, rtol=rtol, atol=atol):
            error = (exact - numeric).abs().max().item()
            raise RuntimeError(
                f"output {k}: the second directional derivative differs from central "
                f"differences by up to {error:.3g}"
            )
    return True


def _is_sparse(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.layout is not torch.strided


def _differentiable_positions(op: Op, inputs: tuple[Any, ...]) -> tuple[int, ...]:
    rules = op._rules
    if not rules.has_backward:
        return ()
    positions = []
    for i, value in enumerate(inputs):
        floating = (isinstance(value, torch.Tensor) and differentiable(value.dtype)) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "fc"
        )
        if floating and (rules.backward_kind != "vjp" or i in rules.vjps):
            positions.append(i)
    return tuple(positions)


def _copies(inputs: tuple[Any, ...], dtype: torch.dtype, grad: tuple[int, ...]) -> tuple[Any, ...]:
    copies = []
    for i, value in enumerate(inputs):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value.copy())
        if isinstance(value, torch.Tensor) and differentiable(value.dtype):
            # Complex inputs stay complex, at the same precision as the real ones.
            target = dtype.to_complex() if value.is_complex() else dtype
            value = value.detach().to(dtype=target, copy=True).requires_grad_(i in grad)
        copies.append(value)
    return tuple(copies)


def _check_float32(op: Op, run: Any, inputs: tuple[Any, ...], grad: tuple[int, ...]) -> None:
    outputs = _as_tuple(_stage(op, "dtype", lambda: run(*inputs)))
    for index, output in enumerate(outputs):
        if differentiable(output.dtype) and output.dtype.to_real() != torch.float32:
            raise CheckError(
                f'npgrad.check of op "{op.name}": a float32 call gave output {index} of dtype '
                f"{output.dtype}; expected torch.float32 (complex64 for a complex output), the "
                f"promotion of the inputs"
            )
    needing = [o for o in outputs if o.requires_grad]
    if not grad or not needing:
        return
    wrt = [inputs[i] for i in grad]
    # A real loss: the sum of each output's real part (its values, for a real output).
    total = torch.stack([torch.real(o).sum() for o in needing]).sum()
    gradients = _stage(op, "dtype", lambda: torch.autograd.grad(total, wrt, allow_unused=True))
    for i, gradient in zip(grad, gradients, strict=True):
        if gradient is not None and gradient.dtype != inputs[i].dtype:
            raise CheckError(
                f'npgrad.check of op "{op.name}": a float32 call gave the gradient of input '
                f'"{op._rules.input_name(i)}" dtype {gradient.dtype}; expected its input\'s, '
                f"{inputs[i].dtype}"
            )


def _stage(op: Op, stage: str, thunk: Any, positions: tuple[int, ...] = ()) -> Any:
    try:
        with warnings.catch_warnings():
            # torch's forward AD loads its decompositions with torch.jit.script, deprecated
            # from torch 2.13 on: a warning about torch itself, not about the op checked.
            for category in (DeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.script", category=category)
            return thunk()
    except NpgradError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        match = re.search(r"with respect to input (\d+)", str(error))
        where = ""
        if match and int(match.group(1)) < len(positions):
            # gradcheck counts only the inputs that require grad.
            position = positions[int(match.group(1))]
            where = f' for input "{op._rules.input_name(position)}" (position {position})'
        raise CheckError(
            f'npgrad.check of op "{op.name}": {stage} failed{where}: {detail}; '
            f"fix the op's {_RULES_CHECKED[stage]} so that its derivatives match finite "
            f"differences"
            if stage in _RULES_CHECKED
            else f'npgrad.check of op "{op.name}": {stage} failed: {type(error).__name__}: '
            f"{detail}; fix the op so it runs on these inputs"
        ) from error


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)
