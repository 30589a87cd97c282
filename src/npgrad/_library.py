"""Each op as a torch.library custom op, for torch.compile, torch.export and opcheck.

Eager calls never come here: they take the generated autograd.Function, which is faster than
the dispatcher. Under ``torch.compile`` and ``torch.export`` (and when an op meets tensors that
are traced rather than real), the op is called as ``torch.ops.<namespace>.<name>``: a kernel
running the NumPy code on real tensors, a fake implementation from the op's shape rule, and an
autograd formula calling the op's backward companion, itself a custom op. An op whose output
shapes are unknown (no signature naming every output dim, no ``@op.shape``), or whose config
has no typed default, is not traceable: under ``torch.compile`` its call becomes a graph break
and runs eagerly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from npgrad import _companions, _function
from npgrad._convert import floating_result_dtype
from npgrad.errors import InputError, MissingBackwardError

if TYPE_CHECKING:
    from npgrad._op import Op

_libraries: dict[str, torch.library.Library] = {}


def register(op: Op) -> str | None:
    """Define ``op`` as a custom op; return why it cannot be, or None when it is defined."""
    schema = _schema(op)
    if schema.startswith("!"):
        return schema[1:]
    library = _libraries.get(op.namespace)
    if library is None:
        library = _libraries[op.namespace] = torch.library.Library(  # type: ignore[no-untyped-call]
            op.namespace, "FRAGMENT"
        )
    library.define(f"{op.opname}{schema}")  # type: ignore[no-untyped-call]

    def kernel(*args: Any, **config: Any) -> list[torch.Tensor]:
        inputs = tuple(args[0]) if op.varargs_name is not None else args
        return _as_list(_function.forward_only(op, inputs, _from_schema(op, config)))

    for key in ("CPU", "CUDA"):
        library.impl(op.opname, kernel, key)  # type: ignore[no-untyped-call]
    torch.library.register_fake(op.name, _fake(op), lib=library)
    torch.library.register_autograd(
        op.name, _backward(op), setup_context=_setup_context(op), lib=library
    )
    return None


def traceable(op: Op) -> bool:
    """Whether the op's output shapes can be known without running it."""
    if op.library_problem is not None:
        return False
    target = op.parent or op
    if target.shape_fn is not None:
        return True
    signature = op.signature
    if signature is None:
        # Companions of ops without signature: gradients are shaped like the inputs, tangents
        # like the parent's outputs.
        return op.parent is not None and (op.companion_kind == "backward" or traceable(op.parent))
    named = {name for core in signature.inputs for name in core}
    return all(name in named or name.isdigit() for core in signature.outputs for name in core)


def call(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    """Call the op through its custom op (for tracing), or eagerly outside the graph."""
    if not traceable(op) or not all(isinstance(a, torch.Tensor) or a is None for a in inputs):
        if torch.compiler.is_compiling():
            return _outside_graph(op, inputs, config)
        raise InputError(
            f'npgrad op "{op.name}" met traced tensors (torch.compile, torch.export, fake '
            f"tensors) but cannot be traced: "
            f"{op.library_problem or 'its output shapes are unknown'}; give it a signature "
            f"naming every output dim or an @{op.__name__}.shape rule, and typed config defaults"
        )
    library_op = getattr(getattr(torch.ops, op.namespace), op.opname).default
    args = (list(inputs),) if op.varargs_name is not None else inputs
    result = library_op(*args, **config)
    if _single(op, inputs, config):
        return result[0]
    return tuple(result)


@torch._dynamo.disable  # type: ignore[untyped-decorator]
def _outside_graph(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    # A graph break: Dynamo runs this call eagerly, on real tensors.
    return _function.call(op, inputs, config)


def _single(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> bool:
    target = op.parent or op
    if op.companion_kind == "backward":
        return False
    if target.shape_fn is not None:
        shapes = [None if a is None else tuple(a.shape) for a in inputs]
        if op.parent is not None:
            shapes = shapes[len(shapes) // 2 :]
        return target.shape_rule(shapes, _parent_config(config))[1]
    assert target.signature is not None
    return len(target.signature.outputs) == 1


def _fake(op: Op) -> Any:
    def fake(*args: Any, **config: Any) -> list[torch.Tensor]:
        inputs = list(args[0]) if op.varargs_name is not None else list(args)
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        shapes = _output_shapes(op, inputs, _from_schema(op, config))
        dtype = floating_result_dtype(tensors)
        return [tensors[0].new_empty(shape, dtype=dtype) for shape in shapes]

    return fake


def _output_shapes(op: Op, inputs: list[Any], config: dict[str, Any]) -> list[tuple[int, ...]]:
    shapes = [None if a is None else tuple(a.shape) for a in inputs]
    parent = op.parent
    if parent is not None and op.signature is None:
        if op.companion_kind == "backward":
            count = len(config[_companions.NEEDS])
            start = config[_companions.N_OUTPUTS]
            return [s if s is not None else () for s in shapes[start : start + count]]
        found = parent.output_shapes(shapes[len(shapes) // 2 :], _parent_config(config))
    elif parent is not None:
        found = op.output_shapes(shapes, {})
    else:
        found = op.output_shapes(shapes, config)
    if found is None:
        raise InputError(f'npgrad op "{op.name}": output shapes unknown for inputs {shapes}')
    return found


def _setup_context(op: Op) -> Any:
    def setup_context(
        ctx: Any,
        inputs: tuple[Any, ...],
        output: Any,
        keyword_only_inputs: dict[str, Any] | None = None,
    ) -> None:
        values = list(inputs[0]) if op.varargs_name is not None else list(inputs)
        ctx.count = len(values)
        ctx.config = _from_schema(op, keyword_only_inputs or {})
        ctx.single = len(output) == 1
        saved = values + (list(output) if op.saves_outputs else [])
        ctx.save_for_backward(*saved)

    return setup_context


def _backward(op: Op) -> Any:
    def backward(ctx: Any, grads: list[torch.Tensor]) -> tuple[Any, ...]:
        if op.parent is not None:
            raise _function._missing_backward(op, 0)
        if not op.has_backward:
            raise MissingBackwardError(
                f'npgrad op "{op.name}": a gradient was asked, but no backward is registered; '
                f"register one with @{op.__name__}.backward"
            )
        saved = ctx.saved_tensors
        inputs = list(saved[: ctx.count])
        outputs = _function.saved_outputs(saved[ctx.count :], ctx.single)
        needs = ctx.needs_input_grad[: ctx.count]
        return tuple(
            _function.op_gradients(op, grads, inputs, outputs, ctx.config, needs, ctx.single)
        )

    return backward


def _schema(op: Op) -> str:
    """Return the custom op's schema, or "!" and the reason there is none."""
    import inspect

    config = []
    parameters = inspect.signature(op.forward).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    if op.parent is not None:
        defaults = {
            **{
                p.name: p.default
                for p in inspect.signature(op.parent.forward).parameters.values()
                if p.kind is p.KEYWORD_ONLY
            },
            **_COMPANION_DEFAULTS,
        }
        if op.companion_kind == "jvp":
            defaults = _parent_config(defaults)
    for name, default in defaults.items():
        kind = _schema_type(default)
        if kind is None:
            return f"!keyword config {name!r} has no default of a schema type (bool, int, " \
                   f"float, str, or a tuple of ints or floats)"  # fmt: skip
        config.append(f"{kind} {name}={_schema_default(default)}")
    if op.varargs_name is not None:
        if op.parent is None:
            return f"!variadic inputs (*{op.varargs_name}) have no schema"
        positional = ["Tensor?[] args"]
    else:
        positional = [
            "Tensor? " + name + "=None" if default is None else "Tensor " + name
            for name, default in zip(op.input_names, _positional_defaults(op), strict=True)
        ]
    keyword = ["*", *config] if config else []
    return f"({', '.join(positional + keyword)}) -> Tensor[]"


def _positional_defaults(op: Op) -> list[Any]:
    missing = len(op.input_names) - len(op.input_defaults)
    return [object()] * missing + list(op.input_defaults)


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


_COMPANION_DEFAULTS = {
    _companions.N_OUTPUTS: 1,
    _companions.NEEDS: (True,),
    _companions.SINGLE: True,
}


def _from_schema(op: Op, config: dict[str, Any]) -> dict[str, Any]:
    # Schema lists come back as lists (the op's defaults were tuples), and arguments equal to
    # their schema default may be left out.
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in config.items()}
    if op.companion_kind == "backward":
        values = {**_COMPANION_DEFAULTS, **values}
    return values


def _parent_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: v for key, v in config.items() if key not in _COMPANION_DEFAULTS}


def _as_list(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]
