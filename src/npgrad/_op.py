"""`Op`: what `npgrad.op` returns, holding an op's forward and its gradients side by side."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from npgrad import _companions, _executors, _library, _numerical, _registry
from npgrad._dispatch import Core
from npgrad._rules import Rule, define, rule
from npgrad.errors import DefinitionError, UnknownOpError

F = TypeVar("F", bound=Callable[..., Any])
Example = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


class Op(Core):
    """A NumPy function made into a differentiable torch op; create one with `npgrad.op`.

    Calling it takes tensors (or arrays and numbers) as positional inputs and static config as
    keywords, and returns a tensor or a tuple of tensors that autograd differentiates through the
    registered backward.

    Examples:
        >>> import torch, npgrad
        >>> @npgrad.op("doc::negate")
        ... def negate(x):
        ...     return -x
        >>> negate
        <npgrad op doc::negate(x), no backward>
        >>> negate(torch.ones(2))
        tensor([-1., -1.])
    """

    def __init__(
        self,
        name: str,
        forward: Callable[..., Any],
        *,
        signature: str | None = None,
        vectorized: bool = False,
        nondifferentiable: Sequence[str | int] = (),
        executor: Executor | None = None,
    ) -> None:
        rules = define(
            name,
            forward,
            signature=signature,
            vectorized=vectorized,
            nondifferentiable=nondifferentiable,
        )
        if _library.defined_elsewhere(name):
            raise DefinitionError(
                f'npgrad op "{name}": torch.ops already has an operator of that name, defined '
                f"outside npgrad; choose another name or namespace"
            )
        # Registered first: a taken name must fail before anything is built or defined.
        self._rules = rules
        _registry.register(self)
        _executors.assign(name, executor)
        super().__init__(rules)
        self.name = name
        self.forward = forward
        self.examples: list[Example] = []
        self.__name__ = rules.opname  # replaced by the function's own name where it has one
        functools.update_wrapper(self, forward)

    def backward(self, fn: F) -> F:
        """Register ``fn`` as the op's backward and return it unchanged.

        ``fn`` takes the gradients of the outputs (one per output), then the op's positional
        inputs as ndarrays, then the same keyword config; it returns one gradient per positional
        input (a bare array when there is one input), or None for an input needing none.
        Keyword-only parameters that are not config are filled by npgrad: ``needs_input_grad``
        (a tuple of bools, one per input), ``outputs`` (the forward's result, saved instead of
        recomputed) and the residuals of `Op.save`, by name.

        Args:
            fn (Callable): the backward function.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::square")
            ... def square(x):
            ...     return x * x
            >>> @square.backward
            ... def _(grad, x):
            ...     return 2 * x * grad
            >>> square(torch.tensor([3.0], requires_grad=True)).sum().backward()
        """
        self._refuse_second_backward()
        self._update(backward=rule(self._rules, fn, "backward"))
        return fn

    def tensor_backward(self, fn: F) -> F:
        """Register ``fn``, written on tensors with npgrad and torch ops, as the op's backward.

        It takes the same arguments as a NumPy backward (`Op.backward`), but as tensors, and
        returns tensors. Because it is made of differentiable ops, torch differentiates it again:
        the op gets second and higher derivatives (``gradgradcheck``, Hessian-vector products)
        and, without a jvp of its own, forward mode (the transpose of the backward). npgrad
        still checks each gradient's shape, sums broadcast gradients down and casts each to its
        input's dtype and device.

        Args:
            fn (Callable): the backward function.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::exp")
            ... def exp(x):
            ...     return np.exp(x)
            >>> @exp.tensor_backward
            ... def _(grad, x):
            ...     return grad * exp(x)  # an npgrad op again: differentiable to any order
            >>> x = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
            >>> (g,) = torch.autograd.grad(exp(x), x, create_graph=True)
            >>> (h,) = torch.autograd.grad(g, x)
            >>> bool(torch.allclose(h, torch.exp(x)))
            True
        """
        self._refuse_second_backward()
        self._update(tensor_backward=rule(self._rules, fn, "tensor_backward"))
        return fn

    def vjp(self, input: str | int) -> Callable[[F], F]:
        """Register a gradient function for one positional input.

        The function takes the same arguments as a whole backward and returns the gradient of
        that input alone. It is called only when that input needs a gradient, as HIPS autograd's
        ``defvjp`` does.

        Args:
            input: the input's parameter name or position.

        Examples:
            >>> import torch, npgrad
            >>> @npgrad.op("doc::scale")
            ... def scale(x, s):
            ...     return x * s
            >>> @scale.vjp("x")
            ... def _(grad, x, s):
            ...     return grad * s
            >>> @scale.vjp("s")
            ... def _(grad, x, s):
            ...     return (grad * x).sum()
        """
        position = self._rules.position(input)

        def register(fn: F) -> F:
            rules = self._rules
            if rules.backward or rules.tensor_backward or position in rules.vjps:
                raise DefinitionError(
                    f'npgrad op "{rules.name}": a gradient for input '
                    f'"{rules.input_name(position)}" is already registered; register one '
                    f"backward, or one vjp per input"
                )
            registered = rule(rules, fn, "vjp")
            if "needs_input_grad" in registered.takes:
                raise DefinitionError(
                    f'npgrad op "{rules.name}": a vjp is only called when its input needs a '
                    f"gradient, so it takes no needs_input_grad parameter; remove it"
                )
            self._update(vjps={**rules.vjps, position: registered})
            return fn

        return register

    def jvp(self, fn: F) -> F:
        """Register the forward-mode derivative (Jacobian-vector product) on ndarrays.

        ``fn`` receives the tangents of the positional inputs (zeros where an input has none),
        then the inputs, then the keyword config, and returns the output tangent (a tuple for
        several outputs). With a signature it sees core dims only, like the forward. It may take
        ``outputs`` and the residuals of `Op.save` as keyword-only parameters, as a backward
        does. It enables ``torch.func.jvp``, ``jacfwd`` and ``torch.autograd.forward_ad``.

        Args:
            fn (Callable): the jvp.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::expm1", signature="()->()")
            ... def expm1(x):
            ...     return np.expm1(x)
            >>> @expm1.jvp
            ... def _(tangent, x):
            ...     return tangent * np.exp(x)
            >>> _, t = torch.func.jvp(expm1, (torch.zeros(2),), (torch.ones(2),))
            >>> t
            tensor([1., 1.])
        """
        self._update(jvp=self._jvp_rule(fn, "jvp"))
        return fn

    def numerical_gradient(self, method: str = "central", step: float | None = None) -> None:
        """Register a backward and a jvp computed from the forward alone.

        For code whose derivative nobody wrote down. ``"central"`` differences (error about
        eps^(2/3) relative on smooth functions, two evaluations per element), ``"forward"``
        (eps^(1/2), one), or ``"complex-step"`` (exact to rounding for real-analytic functions
        whose forward accepts complex input; real inputs only). Each element moves by
        ``step * max(|x|, 1)``; the default step is the method's standard one. Only inputs
        that need a gradient are perturbed, in their core dims; with a signature the perturbed
        evaluations run as one batched call. Everything is computed in float64. The gradient
        is differentiable once, as a NumPy backward is; ``npgrad.check`` estimates its error.
        Noisy or discontinuous functions have no useful finite differences: see the docs.

        Args:
            method: "central", "forward" or "complex-step".
            step: the relative step, or None for the method's default.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::legacy")
            ... def legacy(x):
            ...     return np.sin(x) * np.exp(x)
            >>> legacy.numerical_gradient("complex-step")
            >>> x = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
            >>> (g,) = torch.autograd.grad(legacy(x).sum(), x)
            >>> bool(torch.allclose(g, (torch.cos(x) + torch.sin(x)) * torch.exp(x)))
            True
        """
        rules = self._rules
        choice = _numerical.numerical(rules, method, step)
        self._refuse_second_backward()
        if rules.jvp is not None or rules.tensor_jvp is not None:
            raise DefinitionError(
                f'npgrad op "{self.name}": a jvp is already registered; a numerical gradient '
                f"brings its own, so register one or the other"
            )
        backward, jvp = _numerical.rules_for(rules, choice)
        self._update(backward=backward, jvp=jvp, numerical=choice)

    def tensor_jvp(self, fn: F) -> F:
        """Register ``fn``, written on tensors with npgrad and torch ops, as the op's jvp.

        It takes the same arguments as a NumPy jvp (`Op.jvp`), as tensors, and returns tensors.
        Because it is made of differentiable ops, torch differentiates it again: forward over
        forward (``jacfwd(jacfwd(f))``), and reverse over forward. Register it beside a tensor
        backward where one solve or one product gives the tangent more cheaply than the
        transpose of the backward, which is the forward mode an op gets without a jvp.

        Args:
            fn (Callable): the jvp.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::sinh")
            ... def sinh(x):
            ...     return np.sinh(x)
            >>> @sinh.tensor_jvp
            ... def _(tangent, x):
            ...     return tangent * torch.cosh(x)
            >>> x = torch.tensor([0.5], dtype=torch.float64)
            >>> second = torch.func.jacfwd(torch.func.jacfwd(lambda v: sinh(v).sum()))(x)
            >>> bool(torch.allclose(second, torch.sinh(x)))
            True
        """
        self._update(tensor_jvp=self._jvp_rule(fn, "tensor_jvp"))
        return fn

    def _jvp_rule(self, fn: Callable[..., Any], what: str) -> Rule:
        rules = self._rules
        if rules.jvp is not None or rules.tensor_jvp is not None:
            raise DefinitionError(
                f'npgrad op "{self.name}": a jvp is already registered; register one jvp '
                f"(NumPy or tensor), not several"
            )
        registered = rule(rules, fn, what)
        if "needs_input_grad" in registered.takes:
            raise DefinitionError(
                f'npgrad op "{self.name}": a jvp takes no needs_input_grad parameter; remove it'
            )
        return registered

    def shape(self, fn: F) -> F:
        """Register the output-shape rule: input shapes (tuples) and config in, shape(s) out.

        ``fn`` receives one shape per positional input (None for a number) and the keyword
        config, and returns the output's shape, or a tuple of shapes for several outputs. The
        output dtype follows the dtype policy. With it (or a signature that names every output
        dim) the op compiles under ``torch.compile(fullgraph=True)`` without a graph break.

        Args:
            fn (Callable): the shape rule.

        Examples:
            >>> import numpy as np, npgrad
            >>> @npgrad.op("doc::outer")
            ... def outer(x, y):
            ...     return np.multiply.outer(x, y)
            >>> @outer.shape
            ... def _(x, y):
            ...     return x + y
            >>> outer.output_shapes([(2,), (3,)], {})
            [(2, 3)]
        """
        self._update(shape=rule(self._rules, fn, "shape").fn)
        return fn

    def save(self, fn: F) -> F:
        """Register a forward that also returns residuals for the gradient rules.

        ``fn`` takes the forward's parameters and returns ``(outputs, residuals)``, residuals a
        dict of names to any values (a factorisation, an intermediate array). npgrad calls it
        instead of the forward whenever a backward or jvp may run, and passes each residual to
        the backward, every vjp and the jvp that declares a keyword-only parameter of its name.
        Residuals live as long as the call's graph. Under a trace (``torch.compile``,
        ``torch.export``, the custom op), which cannot carry them, the backward calls ``fn``
        again on the inputs. With a signature, ``fn`` is looped like the forward and each batch
        element's rules get that element's residuals.

        Args:
            fn (Callable): the forward that returns ``(outputs, residuals)``.

        Examples:
            >>> import numpy as np, torch, npgrad
            >>> @npgrad.op("doc::solve")
            ... def solve(a, b):
            ...     return np.linalg.solve(a, b)
            >>> @solve.save
            ... def _(a, b):
            ...     inverse = np.linalg.inv(a)
            ...     return inverse @ b, {"inverse": inverse}
            >>> @solve.backward
            ... def _(grad, a, b, *, inverse, outputs):
            ...     u = inverse.T @ grad
            ...     return -np.outer(u, outputs), u
            >>> a = torch.eye(2, dtype=torch.float64, requires_grad=True)
            >>> solve(a, torch.ones(2, dtype=torch.float64)).sum().backward()
            >>> a.grad
            tensor([[-1., -1.],
                    [-1., -1.]], dtype=torch.float64)
        """
        self._update(save=rule(self._rules, fn, "save").fn)
        return fn

    def example(self, fn: Example) -> Example:
        """Register a callable returning example ``(args, kwargs)``; ``npgrad check`` runs them.

        May be used several times; each example is checked on its own.

        Args:
            fn (Callable): a callable taking nothing and returning a tuple of positional
                inputs and a dict of keyword config.

        Examples:
            >>> import torch, npgrad
            >>> @npgrad.op("doc::half")
            ... def half(x):
            ...     return x / 2
            >>> @half.example
            ... def _():
            ...     return (torch.randn(3),), {}
            >>> len(half.examples)
            1
        """
        self.examples.append(fn)
        return fn

    def output_shapes(
        self, shapes: Sequence[tuple[int, ...] | None], config: dict[str, Any]
    ) -> list[tuple[int, ...]] | None:
        """Return the output shapes for these input shapes, or None if no rule gives them.

        Args:
            shapes: one shape per positional input (None for a number).
            config: the keyword config.

        Examples:
            >>> import npgrad
            >>> npgrad.get("doc::negate").output_shapes([(2, 3)], {}) is None  # no rule
            True
        """
        return self._rules.output_shapes(shapes, config)

    def _update(self, **changes: Any) -> None:
        # A new record, then the companions that run its NumPy rules: made here, at
        # registration, never during a trace (torch.library cannot define ops then).
        self._rules = dataclasses.replace(self._rules, **changes)
        _companions.refresh(self)

    def _refuse_second_backward(self) -> None:
        if self._rules.has_backward:
            raise DefinitionError(
                f'npgrad op "{self.name}": a backward is already registered; register one '
                f"backward (NumPy or tensor), or one vjp per input, not several"
            )

    def __repr__(self) -> str:
        rules = self._rules
        kind = {
            "numpy": "backward",
            "tensor": "tensor backward",
            "vjp": f"vjps for {len(rules.vjps)}",
            "none": "no backward",
        }[rules.backward_kind]
        if rules.numerical is not None:
            method = rules.numerical.method
            error = _numerical.measured_errors.get(self.name)
            estimate = (
                f"measured error {error:.1g}"
                if error is not None
                else f"expected error ~{_numerical.NOMINAL_ERROR[method]:.0e}"
            )
            kind = f"numerical gradient ({method}, {estimate})"
        return f"<npgrad op {self.name}{inspect.signature(self.forward)}, {kind}>"

    def __reduce__(self) -> tuple[Callable[[str, str], Op], tuple[str, str]]:
        # Pickled by name and defining module: unpickling (torch.load, a spawned process)
        # imports the module that registers the op, then looks it up.
        return _load, (self.name, self._rules.module)


def op(
    name: str,
    *,
    signature: str | None = None,
    vectorized: bool = False,
    nondifferentiable: Sequence[str | int] = (),
    executor: Executor | None = None,
) -> Callable[[Callable[..., Any]], Op]:
    """Make a NumPy function a differentiable torch op registered under ``name``.

    Positional parameters receive the tensor inputs as ndarrays (read-only views of CPU tensors);
    keyword-only parameters are static config. The function returns an ndarray or a tuple of
    them; npgrad returns tensors of the inputs' promoted floating dtype on the inputs' device.

    Args:
        name: ``"namespace::name"``, unique in the process.
        signature: core dims in NumPy's gufunc syntax, e.g. ``"(m,n),(n)->(m)"``. Leading dims
            beyond them are batch dims, broadcast across inputs; npgrad loops the function over
            them (on its threads), so it only ever sees core dims. The signature also gives
            output shapes (for ``torch.compile``) and makes ``vmap`` a single batched call.
        vectorized: the function handles leading batch dims itself; npgrad does not loop.
        nondifferentiable: positional inputs (names or positions) that never get a gradient,
            as JAX's ``nondiff_argnums``: an order, a width, a sigma. Asking for their
            gradient or tangent is an error naming them; `Layer` holds them as buffers;
            `check` leaves them constant.
        executor: a `concurrent.futures.Executor` that runs this op's batch loop (forward,
            backward, jvp, numerical gradients), whatever `npgrad.executor` block it is
            called in: a ``ProcessPoolExecutor`` for GIL-bound code, a Dask
            ``Client.get_executor()`` for a cluster. None (the default): the block's, else
            npgrad's threads.

    Examples:
        >>> import numpy as np, torch, npgrad
        >>> @npgrad.op("doc::cube")
        ... def cube(x):
        ...     return x**3
        >>> @cube.backward
        ... def _(grad, x):
        ...     return 3 * x**2 * grad
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> cube(x).sum().backward()
        >>> x.grad
        tensor([ 3., 12.])
    """

    def decorate(forward: Callable[..., Any]) -> Op:
        return Op(
            name,
            forward,
            signature=signature,
            vectorized=vectorized,
            nondifferentiable=nondifferentiable,
            executor=executor,
        )

    return decorate


def get(name: str) -> Op:
    """Return the op registered under ``name``.

    Args:
        name: ``"namespace::name"``, as given to `npgrad.op`.

    Examples:
        >>> import npgrad
        >>> @npgrad.op("doc::twice")
        ... def twice(x):
        ...     return 2 * x
        >>> npgrad.get("doc::twice") is twice
        True
    """
    found: Op = _registry.lookup(name)
    return found


def ops() -> list[str]:
    """Return the names of all registered ops, sorted.

    Examples:
        >>> import npgrad
        >>> "doc::twice" in npgrad.ops()
        True
    """
    return _registry.names()


def _load(name: str, module: str) -> Op:
    """Return the op ``name``, importing ``module`` (which defines it) first if needed."""
    try:
        return get(name)
    except UnknownOpError:
        if module == "__main__":
            raise UnknownOpError(
                f'npgrad: no op is registered under the name "{name}", and the op was defined '
                f"in __main__ (a script or notebook) of the process that saved it, which "
                f"cannot be imported here; define the op in an importable module, import it in "
                f"both processes, and save again (or run the defining code before loading)"
            ) from None
        importlib.import_module(module)
        return get(name)
