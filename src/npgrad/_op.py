"""`Op`: what `npgrad.op` returns, holding an op's forward and its gradients side by side."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from npgrad import _batch, _function, _library, _registry
from npgrad.errors import DefinitionError, UnknownOpError

F = TypeVar("F", bound=Callable[..., Any])
# Bound once: Dynamo recognises the function itself and folds the call to True while tracing.
_is_compiling = torch.compiler.is_compiling
_call = _function.call

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*::[A-Za-z_][A-Za-z0-9_]*$")
# Keyword-only parameters of a backward that npgrad fills itself instead of passing config.
BACKWARD_EXTRAS = frozenset({"needs_input_grad", "outputs"})


class Op:
    """A NumPy function made into a differentiable torch op; create one with `npgrad.op`.

    Calling it takes tensors (or arrays and numbers) as positional inputs and static config as
    keywords, and returns a tensor or a tuple of tensors that autograd differentiates through the
    registered backward.

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
        parent: Op | None = None,
        kind: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(
                f"npgrad: op name {name!r} for {getattr(forward, '__qualname__', forward)!r} is "
                f'not of the form "namespace::name"; use identifiers on both sides, '
                f'e.g. "mylib::{getattr(forward, "__name__", "op")}"'
            )
        if not callable(forward):
            raise DefinitionError(
                f'npgrad op "{name}": expected a function to decorate, got '
                f"{type(forward).__name__}; use @npgrad.op({name!r}) above a def"
            )
        self.name = name
        self.namespace, self.opname = name.split("::")
        self.forward = forward
        self.__name__ = self.opname  # replaced by the function's own name where it has one
        functools.update_wrapper(self, forward)
        self.input_names, self.varargs_name, self.config_names = _parameters(name, forward)
        self.arity = len(self.input_names)
        # Defaults of trailing positional inputs (an optional bias=None), filled in when omitted.
        self.input_defaults = tuple(
            p.default
            for p in inspect.signature(forward).parameters.values()
            if p.name in self.input_names and p.default is not p.empty
        )
        self.defined_at = _where(forward)
        self.backward_fn: Callable[..., Any] | None = None
        self.backward_extras: frozenset[str] = frozenset()
        # A backward on tensors, made of npgrad and torch ops: differentiable again.
        self.tensor_backward_fn: Callable[..., Any] | None = None
        self.examples: list[Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]] = []
        self.module = getattr(forward, "__module__", None) or "__main__"
        self.signature = None if signature is None else _batch.parse(signature, name)
        if self.signature is not None and self.varargs_name is not None and parent is None:
            raise DefinitionError(
                f'npgrad op "{name}": a signature needs named positional inputs, not '
                f"*{self.varargs_name}; list the inputs"
            )
        if (
            self.signature is not None
            and self.varargs_name is None
            and len(self.signature.inputs) != len(self.input_names)
        ):
            raise DefinitionError(
                f'npgrad op "{name}": signature "{signature}" has '
                f"{len(self.signature.inputs)} inputs, the function "
                f"{len(self.input_names)} ({', '.join(self.input_names)}); give one core-dim "
                f"group per positional input"
            )
        self.vectorized = vectorized
        self.shape_fn: Callable[..., Any] | None = None
        self.jvp_fn: Callable[..., Any] | None = None
        # The op a companion (a backward or jvp made an op, for torch.func) belongs to, and
        # which of the two it is ("backward" or "jvp").
        self.parent = parent
        self.companion_kind = kind
        self._companions: dict[str, Op] = {}
        self.vjps: dict[int, Callable[..., Any]] = {}
        self.vjp_extras: dict[int, frozenset[str]] = {}
        self.saves_outputs = False
        self.is_plain = True
        self.function: type[torch.autograd.Function] = _function.build(self)
        self.apply_directly = _function.direct_apply(self.function)
        if parent is None:
            _registry.register(self)
        self.library_problem = _register_library(self)

    def __call__(self, *inputs: Any, **config: Any) -> Any:
        if _is_compiling():
            return _library.call(self, inputs, config)
        return _call(self, inputs, config)

    def backward(self, fn: F) -> F:
        """Register ``fn`` as the op's backward and return it unchanged.

        ``fn`` takes the gradients of the outputs (one per output), then the op's positional
        inputs as ndarrays, then the same keyword config; it returns one gradient per positional
        input (a bare array when there is one input), or None for an input needing none. Two
        optional keyword-only parameters are filled by npgrad: ``needs_input_grad`` (a tuple of
        bools, one per input) and ``outputs`` (the forward's result, saved instead of recomputed).

        Args:
            fn: the backward function.

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
        self.backward_extras = _extras(self, fn, "backward")
        self.backward_fn = fn
        self.saves_outputs = "outputs" in self.backward_extras
        self.companion("backward")
        self._changed()
        return fn

    def tensor_backward(self, fn: F) -> F:
        """Register ``fn``, written on tensors with npgrad and torch ops, as the op's backward.

        It takes the same arguments as a NumPy backward (`Op.backward`), but as tensors, and
        returns tensors. Because it is made of differentiable ops, torch differentiates it again:
        the op gets second and higher derivatives (``gradgradcheck``, Hessian-vector products).
        npgrad still checks each gradient's shape, sums broadcast gradients down and casts each
        to its input's dtype and device.

        Args:
            fn: the backward function.

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
        self.backward_extras = _extras(self, fn, "tensor_backward")
        self.tensor_backward_fn = fn
        self.saves_outputs = "outputs" in self.backward_extras
        self._changed()
        return fn

    def shape(self, fn: F) -> F:
        """Register the output-shape rule: input shapes (tuples) and config in, shape(s) out.

        ``fn`` receives one shape per positional input (None for a number) and the keyword
        config, and returns the output's shape, or a tuple of shapes for several outputs. The
        output dtype follows the dtype policy. With it (or a signature that names every output
        dim) the op compiles under ``torch.compile(fullgraph=True)`` without a graph break.

        Args:
            fn: the shape rule.

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
        self.shape_fn = fn
        return fn

    def jvp(self, fn: F) -> F:
        """Register the forward-mode derivative (Jacobian-vector product) on ndarrays.

        ``fn`` receives the tangents of the positional inputs (zeros where an input has none),
        then the inputs, then the keyword config, and returns the output tangent (a tuple for
        several outputs). With a signature it sees core dims only, like the forward. It enables
        ``torch.func.jvp``, ``jacfwd`` and ``torch.autograd.forward_ad``.

        Args:
            fn: the jvp.

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
        self.jvp_fn = fn
        self.companion("jvp")
        self._changed()
        return fn

    def output_shapes(
        self, shapes: Sequence[tuple[int, ...] | None], config: dict[str, Any]
    ) -> list[tuple[int, ...]] | None:
        """Return the output shapes for these input shapes, or None if no rule gives them.

        >>> import npgrad
        >>> npgrad.get("doc::negate").output_shapes([(2, 3)], {}) is None  # no rule
        True
        """
        if self.shape_fn is not None:
            return self.shape_rule(shapes, config)[0]
        if self.signature is not None:
            # Not the cached binding: while tracing, sizes are symbolic and must not outlive it.
            batch, sizes = self.signature.bind(self.name, shapes)
            return self.signature.output_shapes(batch, sizes)
        return None

    def shape_rule(
        self, shapes: Sequence[tuple[int, ...] | None], config: dict[str, Any]
    ) -> tuple[list[tuple[int, ...]], bool]:
        """Return the ``@op.shape`` rule's output shapes, and whether it gave a single shape."""
        assert self.shape_fn is not None
        result = self.shape_fn(*shapes, **config)
        # One shape is a sequence of sizes (ints, or SymInts while tracing); several shapes are
        # a sequence of sequences.
        if not any(isinstance(dim, (tuple, list, torch.Size)) for dim in result):
            return [tuple(result)], True
        return [tuple(shape) for shape in result], False

    def _changed(self) -> None:
        # Read on every call's hot path: kept as a plain attribute, not a property.
        self.is_plain = self.plain

    def companion(self, kind: str) -> Op:
        """Return the op that runs this op's NumPy backward ("backward") or jvp ("jvp").

        torch.func runs gradients and tangents under vmap and other transforms, which NumPy code
        cannot see through; as ops of their own, with their own vmap rule, they compose.
        """
        from npgrad import _companions

        existing = self._companions.get(kind)
        if existing is not None:
            # What it saves may have changed since (a vjp taking the outputs).
            existing.signature = _companions.signature(self, kind)
            return existing
        # Made when the backward or jvp is registered, never during a trace: torch.library
        # cannot define ops while torch.compile traces.
        made = _companions.make(self, kind)
        self._companions[kind] = made
        return made

    def example(
        self, fn: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]:
        """Register a callable returning example ``(args, kwargs)``; ``npgrad check`` runs them.

        May be used several times; each example is checked on its own.

        Args:
            fn: a callable taking nothing and returning a tuple of positional inputs and a dict
                of keyword config.

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

    def _refuse_second_backward(self) -> None:
        if self.has_backward:
            raise DefinitionError(
                f'npgrad op "{self.name}": a backward is already registered; register one '
                f"backward (NumPy or tensor), or one vjp per input, not several"
            )

    def vjp(self, input: str | int) -> Callable[[F], F]:
        """Register a gradient function for one positional input.

        The function takes the same arguments as a whole backward and returns the gradient of
        that input alone. It is called only when that input needs a gradient, as HIPS autograd's
        ``defvjp`` does.

        Args:
            input: the input's parameter name or position.

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
        position = self._position(input)

        def register(fn: F) -> F:
            if self.backward_fn is not None or self.tensor_backward_fn or position in self.vjps:
                raise DefinitionError(
                    f'npgrad op "{self.name}": a gradient for input "{self.input_name(position)}" '
                    f"is already registered; register one backward, or one vjp per input"
                )
            extras = _extras(self, fn, "vjp")
            if "needs_input_grad" in extras:
                raise DefinitionError(
                    f'npgrad op "{self.name}": a vjp is only called when its input needs a '
                    f"gradient, so it takes no needs_input_grad parameter; remove it"
                )
            self.vjps[position] = fn
            self.vjp_extras[position] = extras
            self.saves_outputs = self.saves_outputs or "outputs" in extras
            self.companion("backward")
            self._changed()
            return fn

        return register

    @property
    def plain(self) -> bool:
        """Whether a call keeps only its inputs: no saved outputs, jvp or tensor backward.

        >>> import npgrad
        >>> npgrad.get("doc::negate").plain
        True
        """
        return not (self.saves_outputs or self.jvp_fn or self.tensor_backward_fn)

    @property
    def has_backward(self) -> bool:
        """Whether a backward (NumPy or tensor, whole or per input) is registered.

        >>> import npgrad
        >>> npgrad.get("doc::negate").has_backward
        False
        """
        return (
            self.backward_fn is not None or self.tensor_backward_fn is not None or bool(self.vjps)
        )

    @property
    def backward_kind(self) -> str:
        """How the gradient is given: "numpy", "tensor", "vjp" (per input) or "none".

        >>> import npgrad
        >>> npgrad.get("doc::negate").backward_kind
        'none'
        """
        if self.backward_fn is not None:
            return "numpy"
        if self.tensor_backward_fn is not None:
            return "tensor"
        return "vjp" if self.vjps else "none"

    @property
    def plugin(self) -> str:
        """The plugin (entry-point name) that defines the op, else its top-level module.

        >>> import npgrad
        >>> "scipy" in npgrad.load_plugins()
        True
        >>> npgrad.get("scipy::conv2d").plugin
        'scipy'
        """
        from npgrad.plugins import plugin_of

        return plugin_of(self.module)

    def input_name(self, position: int) -> str:
        """Return the parameter name of positional input ``position``.

        >>> import npgrad
        >>> npgrad.get("doc::negate").input_name(0)
        'x'
        """
        if position < len(self.input_names):
            return self.input_names[position]
        return f"{self.varargs_name}[{position - len(self.input_names)}]"

    def _position(self, input: str | int) -> int:
        if isinstance(input, int) and not isinstance(input, bool):
            if 0 <= input < len(self.input_names) or (self.varargs_name and input >= 0):
                return input
        elif input in self.input_names:
            return self.input_names.index(input)
        raise DefinitionError(
            f'npgrad op "{self.name}": vjp for input {input!r}, which is not one of its '
            f"positional inputs {self.input_names}; name one of them or give its position"
        )

    def __repr__(self) -> str:
        kind = {
            "numpy": "backward",
            "tensor": "tensor backward",
            "vjp": f"vjps for {len(self.vjps)}",
            "none": "no backward",
        }[self.backward_kind]
        return f"<npgrad op {self.name}{inspect.signature(self.forward)}, {kind}>"

    def __reduce__(self) -> tuple[Callable[[str, str], Op], tuple[str, str]]:
        # Pickled by name and defining module: unpickling (torch.load, a spawned process)
        # imports the module that registers the op, then looks it up.
        return _load, (self.name, self.module)


def op(
    name: str, *, signature: str | None = None, vectorized: bool = False
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
        return Op(name, forward, signature=signature, vectorized=vectorized)

    return decorate


def _parameters(
    name: str, fn: Callable[..., Any]
) -> tuple[tuple[str, ...], str | None, frozenset[str]]:
    positional: list[str] = []
    varargs = None
    config = set()
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional.append(parameter.name)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            varargs = parameter.name
        elif parameter.kind is parameter.KEYWORD_ONLY:
            config.add(parameter.name)
    clash = config & BACKWARD_EXTRAS
    if clash:
        raise DefinitionError(
            f'npgrad op "{name}": keyword config {sorted(clash)} uses a name npgrad passes to '
            f"backwards ({', '.join(sorted(BACKWARD_EXTRAS))}); rename it"
        )
    return tuple(positional), varargs, frozenset(config)


def _extras(op: Op, fn: Callable[..., Any], what: str) -> frozenset[str]:
    if not callable(fn):
        raise DefinitionError(
            f'npgrad op "{op.name}": @{op.__name__}.{what} expects a function, '
            f"got {type(fn).__name__}"
        )
    parameters = inspect.signature(fn).parameters.values()
    return frozenset(
        p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name in BACKWARD_EXTRAS
    )


def _where(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{code.co_filename}:{code.co_firstlineno}"


def _register_library(op: Op) -> str | None:
    """Register ``op`` with torch.library; return why it is not traceable, or None."""
    try:
        return _library.register(op)
    except Exception as error:  # a name or type torch.library refuses: eager still works
        return f"torch.library refused it ({type(error).__name__}: {error})"


def _load(name: str, module: str) -> Op:
    """Return the op ``name``, importing ``module`` (which defines it) first if needed."""
    try:
        return _registry.get(name)
    except UnknownOpError:
        importlib.import_module(module)
        return _registry.get(name)
