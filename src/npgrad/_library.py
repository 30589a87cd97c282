"""Each op as a torch.library custom op, for torch.compile, torch.export and opcheck.

Eager calls never come here: they take the generated autograd.Function, which is faster than
the dispatcher. Under ``torch.compile`` and ``torch.export`` (and when an op meets tensors that
are traced rather than real), the op is called as ``torch.ops.<namespace>.<name>``: a kernel
running the NumPy code on real tensors, a fake implementation from the op's shape rule, and an
autograd formula calling the op's backward (a NumPy backward through its companion, itself a
custom op). An op whose output shapes are unknown (no signature naming every output dim, no
``@op.shape``), whose config has no typed default, or whose tensor backward takes residuals, is
not traceable: under ``torch.compile`` its call becomes a graph break and runs eagerly.

A trace cannot carry residuals (`@op.save`) that are not tensors: the companion's kernel
computes them again, through the same function, from the inputs.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from npgrad._convert import differentiable, floating_result_dtype
from npgrad._forward import Call
from npgrad._gradients import companion_gradients, missing_backward, tensor_gradients
from npgrad._rules import COMPANION_KEYWORDS, Rules, Runtime
from npgrad.errors import InputError, OutputError

_libraries: dict[str, torch.library.Library] = {}


class _Latest:
    """The op now registered under a custom op's name, which the op's kernels call.

    torch.library keeps a definition for the life of the process: an op defined again under
    the same name and schema (a notebook cell run twice) takes over the same custom op.
    """

    def __init__(self, core: Runtime) -> None:
        self.core = core

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def __call__(self, *inputs: Any, **config: Any) -> Any:
        return self.core(*inputs, **config)


# Each custom op npgrad defined: its schema, and the op its kernels call.
_defined: dict[str, tuple[str, _Latest]] = {}


def defined_elsewhere(name: str) -> bool:
    """Whether ``torch.ops`` has an operator ``name`` that npgrad did not define."""
    if name in _defined:
        return False
    namespace, opname = name.split("::")
    try:
        getattr(getattr(torch.ops, namespace), opname)
    except (AttributeError, RuntimeError):
        return False
    return True


def register(core: Runtime) -> str | None:
    """Define ``core``'s op as a custom op; return why it cannot be, or None when it is."""
    rules = core._rules
    schema = _schema(rules)
    if schema.startswith("!"):
        return schema[1:]
    known = _defined.get(rules.name)
    if known is not None:
        if known[0] != schema:
            return (
                f"torch.library keeps its first definition in this process, of schema "
                f"{known[0]}, and this one has {schema}; restart the process to trace it"
            )
        known[1].core = core
        return None
    latest = _Latest(core)
    core = latest
    library = _libraries.get(rules.namespace)
    if library is None:
        library = _libraries[rules.namespace] = torch.library.Library(  # type: ignore[no-untyped-call]
            rules.namespace, "FRAGMENT"
        )
    library.define(f"{rules.opname}{schema}")  # type: ignore[no-untyped-call]
    _defined[rules.name] = (schema, latest)

    def kernel(*args: Any, **config: Any) -> list[torch.Tensor]:
        inputs = tuple(args[0]) if _variadic(rules) else args
        # Below autograd already: the forward alone, without grad mode's context manager.
        outputs = _as_list(core._forward_only(inputs, _from_schema(config, rules)))
        _check_traced_dtypes(rules, inputs, outputs)
        return outputs

    for key in ("CPU", "CUDA"):
        library.impl(rules.opname, kernel, key)  # type: ignore[no-untyped-call]
    torch.library.register_fake(rules.name, _fake(core), lib=library)
    torch.library.register_autograd(
        rules.name, _backward(core), setup_context=_setup_context(core), lib=library
    )
    return None


def _check_traced_dtypes(rules: Rules, inputs: Any, outputs: list[torch.Tensor]) -> None:
    """Refuse results whose dtype the fake implementation could not have foreseen.

    A trace knows an output's dtype only from the inputs' promotion: a real result of
    complex inputs (an absolute value) would leave the trace with the wrong dtype.
    """
    tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
    if not any(t.is_complex() for t in tensors):
        return
    expected = floating_result_dtype(tensors)
    for k, output in enumerate(outputs):
        if differentiable(output.dtype) and output.dtype != expected:
            raise OutputError(
                f'npgrad op "{(rules.parent or rules).name}": as a custom op (torch.compile, '
                f"torch.export, torch.ops) its outputs take the promoted dtype of its inputs, "
                f"{expected}, but output {k} is {output.dtype}; return complex values (e.g. "
                f"np.abs(z) + 0j), or call the op outside the compiled code"
            )


def traceable(core: Runtime) -> bool:
    """Whether the op's output shapes can be known without running it."""
    rules = core._rules
    if core._library_problem is not None:
        return False
    target = rules.parent or rules
    if target.save is not None and target.tensor_backward is not None:
        return False
    if target.shape is not None:
        return True
    signature = rules.signature
    if signature is None:
        # Companions of ops without signature: gradients are shaped like the inputs, tangents
        # like the parent's outputs.
        return rules.parent is not None and (
            rules.kind == "backward" or target.signature is not None
        )
    named = {name for core_dims in signature.inputs for name in core_dims}
    return all(name in named or name.isdigit() for dims in signature.outputs for name in dims)


def call(core: Runtime, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    """Call the op through its custom op (for tracing), or eagerly outside the graph."""
    rules = core._rules
    # Numbers have no place in a schema, and fake tensors are dense: either is a graph break.
    dense = all(
        a is None or (isinstance(a, torch.Tensor) and a.layout == torch.strided) for a in inputs
    )
    if not traceable(core) or not dense:
        if torch.compiler.is_compiling():
            return core._outside_graph[dense](core, inputs, config)
        raise _untraceable(core)
    library_op = getattr(getattr(torch.ops, rules.namespace), rules.opname).default
    args = (list(inputs),) if _variadic(rules) else inputs
    # Residuals are Python objects no schema holds: the companion's kernel computes them again.
    typed = {key: value for key, value in config.items() if key != "residuals"}
    result = library_op(*args, **typed)
    if _single(rules, inputs, typed):
        return result[0]
    return tuple(result)


def _eagerly(core: Runtime, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    # A graph break: Dynamo runs this call eagerly, on real tensors. A trace that cannot break
    # (torch.export) comes here while compiling: the op cannot be traced.
    if torch.compiler.is_compiling():
        raise _untraceable(core)
    return core(*inputs, **config)


def outside_graph(rules: Rules, problem: str | None) -> dict[bool, Any]:
    """Return the op's graph-break functions, for dense inputs (True) and for others (False).

    Each is ``torch.compiler.disable``d with a reason naming the op and the fix, which Dynamo
    quotes in its graph-break message (an error under ``fullgraph=True``). Made when the op is
    defined: making one while tracing would itself break the graph.
    """
    why = {
        True: f"{problem or 'its output shapes are unknown'}; give it a signature naming "
        f"every output dim or an @{(rules.parent or rules).variable}.shape rule, and typed "
        f"config defaults",
        False: "a number or a sparse tensor as a positional input has no place in a custom "
        "op's schema; pass dense tensors for every positional input",
    }
    return {
        dense: torch.compiler.disable(  # type: ignore[no-untyped-call]
            _eagerly, reason=f'npgrad op "{rules.name}" runs outside the graph: {text}'
        )
        for dense, text in why.items()
    }


def _untraceable(core: Runtime) -> InputError:
    rules = core._rules
    return InputError(
        f'npgrad op "{rules.name}" met traced tensors (torch.compile, torch.export, '
        f"torch.jit.trace, fake tensors) but cannot be traced: "
        f"{core._library_problem or 'its output shapes are unknown'}; give it a signature "
        f"naming every output dim or an @{rules.variable}.shape rule, and typed config "
        f"defaults"
    )


def _variadic(rules: Rules) -> bool:
    return rules.varargs_name is not None


def _single(rules: Rules, inputs: tuple[Any, ...], config: dict[str, Any]) -> bool:
    target = rules.parent or rules
    if rules.kind == "backward":
        return False
    if target.shape is not None:
        shapes = [None if a is None else tuple(a.shape) for a in inputs]
        if rules.parent is not None:
            count = config["input_count"]
            shapes = shapes[count : 2 * count]
        return target.shape_rule(shapes, _parent_config(config))[1]
    assert target.signature is not None
    return len(target.signature.outputs) == 1


def _fake(core: Runtime) -> Any:
    rules = core._rules

    def fake(*args: Any, **config: Any) -> list[torch.Tensor]:
        inputs = list(args[0]) if _variadic(rules) else list(args)
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        shapes = _output_shapes(core._rules, inputs, _from_schema(config, rules))
        dtype = floating_result_dtype(tensors)
        return [tensors[0].new_empty(shape, dtype=dtype) for shape in shapes]

    return fake


def _output_shapes(
    rules: Rules, inputs: list[Any], config: dict[str, Any]
) -> list[tuple[int, ...]]:
    shapes = [None if a is None else tuple(a.shape) for a in inputs]
    parent = rules.parent
    if parent is not None and rules.signature is None:
        if rules.kind == "backward":
            count = len(config["needs_input_grad"])
            start = (len(shapes) - count) // (2 if parent.saves_outputs else 1)
            return [s if s is not None else () for s in shapes[start : start + count]]
        count = config["input_count"]
        found = parent.output_shapes(shapes[count : 2 * count], _parent_config(config))
    elif parent is not None:
        found = rules.output_shapes(shapes, {})
    else:
        found = rules.output_shapes(shapes, config)
    if found is None:
        raise InputError(
            f'npgrad op "{rules.name}": traced with inputs of shapes {shapes}, but its output '
            f"shapes are unknown; expected a signature naming every output dim or an "
            f"@{(rules.parent or rules).variable}.shape rule that gives them"
        )
    return found


def _setup_context(core: Runtime) -> Any:
    rules = core._rules

    def setup_context(
        ctx: Any,
        inputs: tuple[Any, ...],
        output: Any,
        keyword_only_inputs: dict[str, Any] | None = None,
    ) -> None:
        values = list(inputs[0]) if _variadic(rules) else list(inputs)
        # The autograd formula's own record of the call, as the Function keeps one: the tensor
        # inputs by position (an optional input may be None), the others as they are.
        slots = [i for i, value in enumerate(values) if isinstance(value, torch.Tensor)]
        tensors = [values[i] for i in slots]
        state = Call(
            core._rules,
            _from_schema(keyword_only_inputs or {}, rules),
            floating_result_dtype(tensors),
            None,
            len(values),
            slots,
            [None if isinstance(value, torch.Tensor) else value for value in values],
        )
        state.single = len(output) == 1
        ctx.state = state
        ctx.save_for_backward(*tensors, *(output if core._rules.saves_outputs else ()))

    return setup_context


def _backward(core: Runtime) -> Any:
    def backward(ctx: Any, grads: list[torch.Tensor]) -> tuple[Any, ...]:
        state: Call = ctx.state
        rules = state.rules
        # One flag per input as the call passed it: trailing optional inputs it left out have
        # none (and get no gradient back), None inputs have None.
        flags = ctx.needs_input_grad
        passed = len(flags)
        needs = [bool(flags[i]) if i < passed else False for i in range(state.count)]
        if not rules.has_backward:
            raise missing_backward(rules, next(i for i, need in enumerate(needs) if need))
        saved = ctx.saved_tensors
        if rules.tensor_backward is not None:
            return tuple(tensor_gradients(state, saved, grads, needs))[:passed]
        companion = core._companions["backward"]
        return tuple(companion_gradients(companion, state, saved, grads, needs))[:passed]

    return backward


def _schema(rules: Rules) -> str:
    """Return the custom op's schema, or "!" and the reason there is none."""
    config = []
    target = rules.parent or rules
    parameters = inspect.signature(target.forward).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    for name, default in defaults.items():
        kind = _schema_type(default)
        if kind is None:
            return (
                f"!keyword config {name!r} has no default of a schema type (bool, int, "
                f"float, str, or a tuple of ints or floats)"
            )
        config.append(f"{kind} {name}={_schema_default(default)}")
    if rules.parent is not None:
        # With defaults, though every call passes them: inductor's code for a custom op passes
        # keyword-only arguments without defaults by position.
        config.extend(
            f"{kind} {name}={_schema_default(default)}"
            for name, (kind, default) in COMPANION_KEYWORDS[rules.kind].items()
            if kind is not None
        )
        positional = ["Tensor?[] args"]
    elif rules.varargs_name is not None:
        return f"!variadic inputs (*{rules.varargs_name}) have no schema"
    else:
        missing = len(rules.input_names) - len(rules.input_defaults)
        defaults_list = [object()] * missing + list(rules.input_defaults)
        positional = [
            "Tensor? " + name + "=None" if default is None else "Tensor " + name
            for name, default in zip(rules.input_names, defaults_list, strict=True)
        ]
    keyword = ["*", *config] if config else []
    return f"({', '.join(positional + keyword)}) -> Tensor[]"


def _schema_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, tuple) and value:
        if all(isinstance(v, bool) for v in value):
            return "bool[]"
        if all(isinstance(v, int) for v in value):
            return "int[]"
        if all(isinstance(v, float) for v in value):
            return "float[]"
    return None


def _schema_default(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_schema_default(v) for v in value) + "]"
    return repr(value)


def _from_schema(config: dict[str, Any], rules: Rules) -> dict[str, Any]:
    # Schema lists come back as lists (the op's defaults were tuples), and arguments equal to
    # their schema default may be left out: the companion's own are filled in again.
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in config.items()}
    if rules.parent is not None:
        defaults = {
            name: default
            for name, (kind, default) in COMPANION_KEYWORDS[rules.kind].items()
            if kind is not None
        }
        values = {**defaults, **values}
    return values


def _parent_config(config: dict[str, Any]) -> dict[str, Any]:
    added = {name for keywords in COMPANION_KEYWORDS.values() for name in keywords}
    return {key: v for key, v in config.items() if key not in added}


def _as_list(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]
