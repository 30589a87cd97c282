"""An op's definition and its registered rules, in one immutable record.

Every registration (``@op.backward``, ``@op.vjp``, ``@op.jvp``, ``@op.shape``, ``@op.save``...)
makes a new record. What the call path reads of it, such as whether a call keeps its outputs,
is derived when the record is made, so no registration can leave it stale.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from npgrad._batch import Signature, parse
from npgrad.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*::[A-Za-z_][A-Za-z0-9_]*$")
# Keyword-only parameters npgrad fills itself in gradient rules, never config.
FILLED = frozenset({"needs_input_grad", "outputs"})
# What each kind of companion op (see _companions) takes beside its parent's config: a name, its
# custom-op schema type and default (None: not in the schema; a trace computes it again).
COMPANION_KEYWORDS: dict[str, dict[str, tuple[str | None, Any]]] = {
    "backward": {
        "needs_input_grad": ("bool[]", ()),
        "single_output": ("bool", True),
        "residuals": (None, None),
    },
    "jvp": {
        "input_count": ("int", 0),
        "single_output": ("bool", True),
        "differentiable": ("bool[]", ()),
        "residuals": (None, None),
    },
}
# No config may take these names.
RESERVED = FILLED | {name for keywords in COMPANION_KEYWORDS.values() for name in keywords}


@dataclass(frozen=True)
class Rule:
    """A registered function and the keywords npgrad fills for it."""

    fn: Callable[..., Any]
    # Keyword-only parameters that are not config: needs_input_grad, outputs, residual names.
    takes: frozenset[str]
    # Those of them without a default, which a call must fill.
    required: frozenset[str]
    # A **kwargs parameter: it receives every residual.
    any_keyword: bool
    # Called once on the whole batch, even for an op looped over its signature's batch dims.
    batched: bool = False
    # Neither: a call passes the config alone (derived).
    config_only: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_only", not self.takes and not self.any_keyword)


@dataclass(frozen=True)
class Rules:
    """What an op is (name, forward, inputs, config, signature) and every rule registered for it."""

    name: str
    forward: Callable[..., Any]
    input_names: tuple[str, ...]
    varargs_name: str | None
    config_names: frozenset[str]
    input_defaults: tuple[Any, ...]
    signature: Signature | None
    vectorized: bool
    defined_at: str
    module: str
    # Positions of the inputs that never get a gradient (npgrad.op(nondifferentiable=...)).
    nondifferentiable: frozenset[int] = frozenset()
    # "op", or for a companion (see _companions) "backward" or "jvp" of its parent.
    kind: str = "op"
    parent: Rules | None = None
    backward: Rule | None = None
    tensor_backward: Rule | None = None
    vjps: Mapping[int, Rule] = field(default_factory=dict)
    jvp: Rule | None = None
    tensor_jvp: Rule | None = None
    # How the backward and jvp compute from the forward, when they are numerical.
    numerical: Any = None
    shape: Callable[..., Any] | None = None
    save: Callable[..., Any] | None = None
    # Derived from the fields above when the record is made.
    arity: int = field(init=False)
    looped: bool = field(init=False)
    saves_outputs: bool = field(init=False)
    keeps_only_inputs: bool = field(init=False)
    # A NumPy backward called as fn(*grads, *inputs, **config), once for the call: nothing to
    # fill in, slice or refuse.
    plain_backward: bool = field(init=False)
    # A forward called as fn(*inputs, **config), once for the call, its result kept as it is.
    plain_forward: bool = field(init=False)

    def __post_init__(self) -> None:
        rules = [
            self.backward,
            self.tensor_backward,
            self.jvp,
            self.tensor_jvp,
            *self.vjps.values(),
        ]
        saves_outputs = any(rule is not None and "outputs" in rule.takes for rule in rules)
        derived = {
            "arity": len(self.input_names),
            # NumPy rules run once per element of the signature's batch dims.
            "looped": self.signature is not None and not self.vectorized,
            "saves_outputs": saves_outputs,
            "keeps_only_inputs": not (saves_outputs or self.jvp or self.tensor_jvp),
            "plain_backward": self.backward is not None
            and self.backward.config_only
            and not (self.signature is not None and not self.vectorized)
            and not self.nondifferentiable
            and self.save is None,
            "plain_forward": self.signature is None and self.save is None,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def namespace(self) -> str:
        return self.name.split("::")[0]

    @property
    def opname(self) -> str:
        return self.name.split("::")[1]

    @property
    def has_backward(self) -> bool:
        return self.backward is not None or self.tensor_backward is not None or bool(self.vjps)

    @property
    def backward_kind(self) -> str:
        """How the gradient is given: "numpy", "tensor", "vjp" (per input) or "none"."""
        if self.backward is not None:
            return "numpy"
        if self.tensor_backward is not None:
            return "tensor"
        return "vjp" if self.vjps else "none"

    @property
    def variable(self) -> str:
        """The name a user's code most likely gives the op, for hints in messages."""
        return getattr(self.forward, "__name__", self.opname)

    def describe(self, position: int) -> tuple[str, str, str, int]:
        """Say, for messages about a gradient, which op, rule and input it belongs to."""
        rule = {"numpy": "backward", "tensor": "tensor backward"}.get(self.backward_kind, "vjp")
        return self.name, rule, self.input_name(position), position

    def input_name(self, position: int) -> str:
        if position < len(self.input_names):
            return self.input_names[position]
        return f"{self.varargs_name}[{position - len(self.input_names)}]"

    def position(self, input: str | int) -> int:
        """Return the position of the positional input named ``input`` (or given by position)."""
        if isinstance(input, int) and not isinstance(input, bool):
            if 0 <= input < len(self.input_names) or (self.varargs_name and input >= 0):
                return input
        elif input in self.input_names:
            return self.input_names.index(input)
        raise DefinitionError(
            f'npgrad op "{self.name}": vjp for input {input!r}, which is not one of its '
            f"positional inputs {self.input_names}; name one of them or give its position"
        )

    def shape_rule(
        self, shapes: Sequence[tuple[int, ...] | None], config: Mapping[str, Any]
    ) -> tuple[list[tuple[int, ...]], bool]:
        """Return the ``@op.shape`` rule's output shapes, and whether it gave a single shape."""
        assert self.shape is not None
        result = self.shape(*shapes, **config)
        # One shape is a sequence of sizes (ints, or SymInts while tracing); several shapes are
        # a sequence of sequences.
        if not any(isinstance(dim, (tuple, list, torch.Size)) for dim in result):
            return [tuple(result)], True
        return [tuple(shape) for shape in result], False

    def output_shapes(
        self, shapes: Sequence[tuple[int, ...] | None], config: Mapping[str, Any]
    ) -> list[tuple[int, ...]] | None:
        """Return the output shapes for these input shapes, or None if no rule gives them."""
        if self.shape is not None:
            return self.shape_rule(shapes, config)[0]
        if self.signature is not None:
            # Not the cached binding: while tracing, sizes are symbolic and must not outlive it.
            batch, sizes = self.signature.bind(self.name, shapes)
            return self.signature.output_shapes(batch, sizes)
        return None


class Runtime(Protocol):
    """An op as the layers below `npgrad.Op` see it: its rules, Functions and companions."""

    @property
    def _rules(self) -> Rules: ...
    @property
    def _function(self) -> type[torch.autograd.Function]: ...
    @property
    def _companions(self) -> Mapping[str, Runtime]: ...
    @property
    def _library_problem(self) -> str | None: ...
    @property
    def _outside_graph(self) -> Mapping[bool, Callable[..., Any]]: ...

    def __call__(self, *inputs: Any, **config: Any) -> Any: ...
    def _forward_only(self, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any: ...


def define(
    name: str,
    forward: Callable[..., Any],
    *,
    signature: str | None,
    vectorized: bool,
    nondifferentiable: Sequence[str | int] = (),
) -> Rules:
    """Return the record of a new op, checking its name, function and signature."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"npgrad: op name {name!r} for {getattr(forward, '__qualname__', forward)!r} is "
            f'not of the form "namespace::name"; use identifiers on both sides, '
            f'e.g. "mylib::{getattr(forward, "__name__", "op")}"'
        )
    namespace = name.split("::")[0]
    if namespace in _RESERVED_NAMESPACES or namespace.startswith("_"):
        raise DefinitionError(
            f'npgrad op "{name}": the namespace "{namespace}" belongs to torch (its own '
            f"operators live there, and an op defined in it breaks torch.compile for the whole "
            f'process); use a namespace of your own, e.g. "mylib::{name.split("::")[1]}"'
        )
    if not callable(forward):
        raise DefinitionError(
            f'npgrad op "{name}": expected a function to decorate, got '
            f"{type(forward).__name__}; use @npgrad.op({name!r}) above a def"
        )
    positional: list[str] = []
    defaults: list[Any] = []
    varargs = None
    config = set()
    for parameter in inspect.signature(forward).parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional.append(parameter.name)
            if parameter.default is not parameter.empty:
                defaults.append(parameter.default)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            varargs = parameter.name
        elif parameter.kind is parameter.KEYWORD_ONLY:
            config.add(parameter.name)
    clash = config & RESERVED
    if clash:
        raise DefinitionError(
            f'npgrad op "{name}": keyword config {sorted(clash)} uses a name npgrad passes to '
            f"gradient rules ({', '.join(sorted(RESERVED))}); rename it"
        )
    parsed = None if signature is None else parse(signature, name)
    if parsed is not None and varargs is not None:
        raise DefinitionError(
            f'npgrad op "{name}": a signature needs named positional inputs, not '
            f"*{varargs}; list the inputs"
        )
    if parsed is not None and len(parsed.inputs) != len(positional):
        raise DefinitionError(
            f'npgrad op "{name}": signature "{signature}" has {len(parsed.inputs)} inputs, the '
            f"function {len(positional)} ({', '.join(positional)}); give one core-dim group per "
            f"positional input"
        )
    fixed = set()
    for input in (nondifferentiable,) if isinstance(nondifferentiable, str) else nondifferentiable:
        if input in positional:
            fixed.add(positional.index(input))
        elif isinstance(input, int) and 0 <= input < len(positional):
            fixed.add(input)
        else:
            raise DefinitionError(
                f'npgrad op "{name}": nondifferentiable names {input!r}, which is not one of '
                f"its positional inputs ({', '.join(positional) or 'none'}); name one of them "
                f"or give its position"
            )
    return Rules(
        name=name,
        forward=forward,
        nondifferentiable=frozenset(fixed),
        input_names=tuple(positional),
        varargs_name=varargs,
        config_names=frozenset(config),
        input_defaults=tuple(defaults),
        signature=parsed,
        vectorized=vectorized,
        defined_at=where(forward),
        module=getattr(forward, "__module__", None) or "__main__",
    )


# torch's own operator namespaces (torch.ops.<ns>), and those of its libraries.
_RESERVED_NAMESPACES = frozenset(
    {
        "aten", "prim", "prims", "torch", "quantized", "quantized_decomposed", "c10d",
        "c10d_functional", "profiler", "inductor", "higher_order", "mkldnn", "onednn", "mkl",
        "cuda", "nvprims", "rngprims", "debugprims", "fbgemm", "sparse", "xnnpack", "vulkan",
        "image", "torchvision", "torchaudio", "torchtext", "symm_mem", "fsdp", "functional",
        "attr", "aten_ops", "npgrad",
    }
)  # fmt: skip


def rule(rules: Rules, fn: Callable[..., Any], what: str) -> Rule:
    """Return ``fn`` as a rule of ``rules``' op, reading which keywords npgrad must fill."""
    if not callable(fn):
        raise DefinitionError(
            f'npgrad op "{rules.name}": @{rules.variable}.{what} expects a function, '
            f"got {type(fn).__name__}; decorate a def, or pass a function"
        )
    takes, required = set(), set()
    any_keyword = False
    parameters = inspect.signature(fn).parameters.values()
    for parameter in parameters:
        if parameter.kind is parameter.VAR_KEYWORD:
            any_keyword = True
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.name not in rules.config_names:
            takes.add(parameter.name)
            if parameter.default is parameter.empty:
                required.add(parameter.name)
    _check_fit(rules, parameters, what, any_keyword)
    return Rule(fn, frozenset(takes), frozenset(required), any_keyword)


def _check_fit(rules: Rules, parameters: Any, what: str, any_keyword: bool) -> None:
    """Refuse a rule that cannot take what npgrad passes it: leading values, inputs, config."""
    if what in ("shape", "save") or rules.varargs_name is not None:
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    required = sum(p.default is p.empty for p in positional)
    n = rules.arity
    if what.endswith("jvp"):
        leading, wanted = f"{n} tangent(s)", (2 * n, 2 * n)
    else:
        outputs = None if rules.signature is None else len(rules.signature.outputs)
        leading = f"{outputs or 'one or more'} output gradient(s)"
        wanted = (n + (outputs or 1), n + outputs if outputs else len(positional))
    problem = None
    if not varargs and len(positional) < wanted[0]:
        problem = f"takes {len(positional)} positional parameter(s)"
    elif required > wanted[1]:
        problem = f"requires {required} positional parameter(s)"
    names = {p.name for p in parameters}
    missing = sorted(rules.config_names - names) if not any_keyword else []
    if problem is None and missing:
        problem = f"does not take the config {missing}"
    if problem is not None:
        config = f", then the config ({', '.join(sorted(rules.config_names))}) as keywords"
        raise DefinitionError(
            f'npgrad op "{rules.name}": @{rules.variable}.{what} {problem}; it is called with '
            f"{leading}, then the {n} input(s) ({', '.join(rules.input_names)})"
            f"{config if rules.config_names else ''}; give it parameters for all of them"
        )


def where(fn: Callable[..., Any]) -> str:
    """Return "file:line" of a function's definition."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{code.co_filename}:{code.co_firstlineno}"
