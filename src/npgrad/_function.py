"""The autograd.Function behind each op, and the per-call path through it.

One call: inputs are sorted into tensors and constants and checked (kind, complex, device);
if autograd needs a graph the op's generated Function runs, otherwise the forward runs directly.
Both paths share `run_forward`, so they cannot drift. The Function is written in the
forward/setup_context form that torch.func requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.autograd import forward_ad

from npgrad import _batch
from npgrad._convert import (
    array_problem,
    as_array,
    floating_result_dtype,
    reduce_to_shape,
    reduction_axes,
    sparse_gradient,
    to_numpy,
    to_numpy_all,
    to_tensor,
)
from npgrad.errors import (
    GradientError,
    InputError,
    MissingBackwardError,
    NonFiniteError,
    NotTwiceDifferentiableError,
    NpgradError,
    OutputError,
)

if TYPE_CHECKING:
    from npgrad._op import Op

_transforms_active = torch._C._are_functorch_transforms_active
_anomaly_enabled = torch.is_anomaly_enabled
_functorch = torch._C._functorch
_VMAP = _functorch.TransformType.Vmap
_Tensor = torch.Tensor
_STRIDED = torch.strided
_Parameter = torch.nn.Parameter
_PLAIN_TENSORS = (_Tensor, _Parameter)
# Positional inputs passed through as they are: numbers, and None for an absent optional input.
_CONSTANTS = (bool, int, float, np.bool_, np.integer, np.floating, type(None))


class Call:
    """What one call carries from the forward to its backward; metadata only, never tensors."""

    __slots__ = (
        "arrays",
        "config",
        "constants",
        "count",
        "device",
        "dtype",
        "op",
        "single",
        "slots",
    )

    def __init__(
        self,
        op: Op,
        config: dict[str, Any],
        dtype: torch.dtype,
        device: torch.device | None,
        count: int,
        slots: Sequence[int] | None = None,
        constants: list[Any] | None = None,
    ) -> None:
        self.op = op
        self.count = count
        self.config = config
        self.dtype = dtype
        # None on the CPU, where results need no move.
        self.device = device
        # Positions of the tensor inputs, and the other inputs by position (None where a tensor
        # goes); both None when every positional input is a tensor, the common fast case.
        self.slots = slots
        self.constants = constants
        self.single = True
        # What the user's forward received, kept for the backward: converting the saved tensors
        # again would cost as much as the conversion itself. Dies with the autograd context.
        self.arrays: Sequence[Any] = ()


def call(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    """Run ``op`` on ``inputs``: through its Function when a graph is needed, else directly."""
    if len(inputs) != op.arity and op.varargs_name is None:
        missing = len(op.input_names) - len(inputs)
        if 0 < missing <= len(op.input_defaults):
            return call(op, inputs + op.input_defaults[-missing:], config)
        raise InputError(
            f'npgrad op "{op.name}": called with {len(inputs)} positional inputs, expected '
            f"{len(op.input_names)} ({', '.join(op.input_names)}); pass config as keywords"
        )
    # The fast case, checked with as little as possible: every input a tensor, all of one
    # floating dtype, on one device.
    needs_graph = False
    dtype = device = None
    for value in inputs:
        kind = type(value)
        if kind is not _Tensor and kind is not _Parameter:
            return _call_general(op, inputs, config)
        if dtype is None:
            dtype = value.dtype
            device = value.device
        elif value.dtype is not dtype or value.device != device:
            return _call_general(op, inputs, config)
        if value.requires_grad:
            needs_graph = True
    if dtype is None or not dtype.is_floating_point:
        return _call_general(op, inputs, config)
    state = Call(op, config, dtype, None if inputs[0].is_cpu else device, len(inputs))
    # _dispatch, inlined on this hot path.
    if _transforms_active() or forward_ad._current_level >= 0:
        return _transformed(op, state, inputs)
    if needs_graph and torch.is_grad_enabled():
        return op.apply_directly(state, *inputs)
    return run_forward(state, inputs)


def _call_general(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    if any(
        isinstance(value, torch.Tensor) and type(value) not in _PLAIN_TENSORS for value in inputs
    ):
        # Fake or functional tensors: a trace (AOTAutograd, export, opcheck) is under way.
        from npgrad import _library

        return _library.call(op, inputs, config)
    args = list(inputs)
    constants = list(inputs)
    slots = []
    tensors = []
    needs_graph = False
    for i, value in enumerate(inputs):
        if isinstance(value, torch.Tensor):
            tensor = value
        elif isinstance(value, np.ndarray) and array_problem(value) is None:
            tensor = to_tensor(value, None, None)
            args[i] = tensor
        elif isinstance(value, _CONSTANTS):
            continue
        else:
            raise _input_error(op, i, value)
        if tensor.is_complex():
            raise _input_error(op, i, value)
        if tensor.requires_grad:
            needs_graph = True
        constants[i] = None
        slots.append(i)
        tensors.append(tensor)
    device = _common_device(op, tensors)
    state = Call(
        op,
        config,
        floating_result_dtype(tensors),
        None if device.type == "cpu" else device,
        len(inputs),
        slots,
        constants,
    )
    return _dispatch(op, state, args, needs_graph)


def _dispatch(op: Op, state: Call, args: Sequence[Any], needs_graph: bool) -> Any:
    if _transforms_active() or forward_ad._current_level >= 0:
        return _transformed(op, state, args)
    if needs_graph and torch.is_grad_enabled():
        return op.apply_directly(state, *args)
    return run_forward(state, args)


def _transformed(op: Op, state: Call, args: Sequence[Any]) -> Any:
    """Call under torch.func transforms or dual tensors: the Function's rules are needed."""
    if forward_ad._current_level < 0:
        # torch's C++ interpreter, not the Python wrapper that retrieving it builds per call.
        interpreter = _functorch.peek_interpreter_stack()
        if interpreter.key() == _VMAP:
            return _vmap_innermost(op, state, args, interpreter)
    return op.function.apply(state, *args)  # type: ignore[no-untyped-call]


def _vmap_innermost(op: Op, state: Call, args: Sequence[Any], interpreter: Any) -> Any:
    """Apply the vmap rule directly, as torch's handling of an autograd.Function would.

    Unwrap the batched tensors, run the rule one level down (popping the layer is what the
    interpreter's ``lower()`` does), rewrap: without torch's generic machinery, which costs more
    than a small op.
    """
    level = interpreter.level()
    values, dims = [], []
    # In place: every input a tensor batched in front with as many batch dims as the others,
    # none needing a gradient. Then the whole batch is one plain forward, dispatched once: the
    # common case, checked within the unwrapping loop because a vmapped small op is paid for
    # by the microsecond.
    signature = op.signature
    in_place = signature is not None and state.slots is None
    ranks = set()
    for k, value in enumerate(args):
        if isinstance(value, torch.Tensor) and _functorch.maybe_get_level(value) == level:
            value, dim = _functorch._unwrap_batched(value, level)
            if in_place:
                ranks.add(value.dim() - len(signature.inputs[k]))  # type: ignore[union-attr]
                in_place = dim == 0 and not value.requires_grad
        else:
            dim = None
            in_place = False
        values.append(value)
        dims.append(dim)
    layer = _functorch.pop_dynamic_layer_stack()
    try:
        if in_place and len(ranks) == 1 and not _transforms_active():
            out = run_forward(state, values)
            out_dims: Any = (0,) * len(out) if isinstance(out, tuple) else 0
        else:
            size = _functorch.CVmapInterpreterPtr(interpreter).batchSize()
            out, out_dims = run_vmap(op, state, size, dims, values)
    finally:
        _functorch.push_dynamic_layer_stack(layer)
    if isinstance(out, tuple):
        return tuple(_rewrap(o, d, level) for o, d in zip(out, out_dims, strict=True))
    return _rewrap(out, out_dims, level)


def _rewrap(value: torch.Tensor, dim: int | None, level: int) -> torch.Tensor:
    return value if dim is None else _functorch._add_batch_dim(value, dim, level)


def run_forward(state: Call, args: Sequence[Any]) -> Any:
    """Convert the tensor inputs, run the user's forward, convert its result back."""
    op = state.op
    if state.slots is None:
        arrays = to_numpy_all(args)
    else:
        arrays = list(state.constants)  # type: ignore[arg-type]
        for i in state.slots:
            arrays[i] = to_numpy(args[i])
    state.arrays = arrays
    signature = op.signature
    try:
        if signature is None:
            result = op.forward(*arrays, **state.config)
        else:
            shapes = tuple([a.shape if isinstance(a, np.ndarray) else None for a in arrays])
            batch, expected = signature.bind_outputs(op.name, shapes)
            if op.vectorized:
                result = op.forward(*arrays, **state.config)
            else:
                result = _batch.loop(
                    op.forward, signature, op.name, arrays, state.config, batch=batch
                )
    except Exception as error:
        _add_note(error, op, "forward")
        raise
    if signature is not None and expected is not None:
        _check_signature_shapes(op, expected, result)
    if isinstance(result, tuple):
        state.single = False
        outputs = tuple(_output(op, k, value, state) for k, value in enumerate(result))
        if _anomaly_enabled():
            for k, output in enumerate(outputs):
                _check_finite(op, output, f"output {k} of the forward")
        return outputs
    output = _output(op, 0, result, state)
    if _anomaly_enabled():
        _check_finite(op, output, "output 0 of the forward")
    return output


def _check_signature_shapes(op: Op, expected: list[tuple[int, ...]], result: Any) -> None:
    assert op.signature is not None
    outputs = result if isinstance(result, tuple) else (result,)
    for k, (value, shape) in enumerate(zip(outputs, expected, strict=False)):
        # np.shape dispatches through __array_function__: a microsecond an output.
        got = value.shape if type(value) is np.ndarray else np.shape(value)
        if got != shape:
            raise OutputError(
                f'npgrad op "{op.name}": forward returned shape {got} at output {k}, but the '
                f'signature "{op.signature.text}" makes it {shape}; return core dims as the '
                f"signature names them, or fix the signature"
            )


def _check_finite(op: Op, tensor: torch.Tensor | None, what: str) -> None:
    """Under torch's anomaly mode, refuse NaN and Inf where an op produced them."""
    if tensor is None or not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f'npgrad op "{op.name}": {what} has {bad} NaN or Inf value(s) of {tensor.numel()} '
            f"(found by torch.autograd.set_detect_anomaly); expected finite values; check the "
            f"op's domain and its inputs"
        )


def _output(op: Op, index: int, value: Any, state: Call) -> torch.Tensor:
    if type(value) is np.ndarray and value.dtype.kind == "f":
        return to_tensor(value, state.dtype, state.device)
    value = as_array(value)
    problem = array_problem(value)
    if problem is not None:
        fix = {
            "a NoneType": "return the result; a forward must return an ndarray or a tuple of them",
            "a list": "return a tuple of ndarrays for several outputs, or np.asarray(...) for one",
        }.get(
            problem,
            "return real (bool, integer or floating) ndarrays; split complex "
            "results into real and imaginary parts",
        )
        raise OutputError(
            f'npgrad op "{op.name}": forward returned {problem} at output {index}, expected an '
            f"ndarray of a real dtype; {fix}"
        )
    assert isinstance(value, np.ndarray)
    dtype = state.dtype if value.dtype.kind == "f" else None
    return to_tensor(value, dtype, state.device)


def build(op: Op) -> type[torch.autograd.Function]:
    """Return a new autograd.Function subclass running ``op``, named after it."""

    def forward(state: Call, *args: Any) -> Any:
        return run_forward(state, args)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        state: Call = inputs[0]
        ctx.state = state
        if type(output) is _Tensor and state.slots is None and op.is_plain:
            # The common case: one output, every input a tensor, nothing else to keep.
            ctx.save_for_backward(*inputs[1:])
            if not output.is_floating_point():
                ctx.mark_non_differentiable(output)
            return
        # Under torch.func the forward may have run on another state (the vmap rule's call).
        state.single = not isinstance(output, tuple)
        if op.jvp_fn is not None:
            ctx.save_for_forward(*[t for t in inputs[1:] if isinstance(t, torch.Tensor)])
        if op.tensor_backward_fn is not None:
            # The tensor backward works on the saved tensors: drop the arrays (copies for half
            # floats and device tensors).
            state.arrays = ()
        outputs = (output,) if state.single else output
        saved = list(inputs[1:]) if state.slots is None else [inputs[1 + i] for i in state.slots]
        if op.saves_outputs:
            saved.extend(outputs)
        ctx.save_for_backward(*saved)
        frozen = [t for t in outputs if not t.is_floating_point()]
        if frozen:
            ctx.mark_non_differentiable(*frozen)

    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        state: Call = ctx.state
        needs = ctx.needs_input_grad[1:]
        if op.tensor_backward_fn is None and not _transforms_active():
            return (None, *run_backward(state, ctx.saved_tensors, grads, needs))
        inputs, outputs = _saved_inputs(state, ctx.saved_tensors)
        return (None, *op_gradients(op, grads, inputs, outputs, state.config, needs, state.single))

    def jvp(ctx: Any, _: Any, *tangents: torch.Tensor | None) -> Any:
        return run_jvp(ctx.state, ctx.saved_tensors, tangents)

    def vmap(info: Any, in_dims: tuple[int | None, ...], state: Call, *args: Any) -> Any:
        return run_vmap(op, state, info.batch_size, in_dims[1:], args)

    namespace = {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp),
        "vmap": staticmethod(vmap),
        "__module__": __name__,
        "__doc__": f"The autograd.Function of npgrad op {op.name}.",
    }
    return type(f"{op.namespace}_{op.opname}", (torch.autograd.Function,), namespace)


def direct_apply(function: type[torch.autograd.Function]) -> Any:
    """Return the C++ ``apply`` of ``function``, bypassing ``Function.apply``'s Python prologue.

    Outside torch.func transforms, ``Function.apply`` only binds the arguments to ``forward``'s
    signature with ``inspect`` (about 10 us a call, a quarter of a small op's whole cost) before
    calling this; npgrad's forward takes plain positional arguments, so the binding is a no-op.
    """
    return super(torch.autograd.Function, function).apply  # type: ignore[misc]


def run_backward(
    state: Call,
    saved: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    needs: Sequence[bool],
) -> list[torch.Tensor | None]:
    """Call the user's gradients on ndarrays; check, reduce and convert what they return."""
    op = state.op
    inputs = state.arrays
    outputs: Any = None
    if op.saves_outputs:
        held = len(inputs) if state.slots is None else len(state.slots)
        outputs = saved_outputs([to_numpy(t) for t in saved[held:]], state.single)
    grad_arrays = to_numpy_all(grads)
    raw = user_gradients(op, grad_arrays, inputs, state.config, needs, outputs)
    device = state.device
    result: list[torch.Tensor | None] = [None] * len(inputs)
    for k, i in enumerate(range(len(inputs)) if state.slots is None else state.slots):
        gradient = raw[i]
        if needs[i] and gradient is not None:
            result[i] = _gradient(op, i, gradient, saved[k], device)
    if _anomaly_enabled():
        for i, gradient in enumerate(result):
            _check_finite(op, gradient, f'the gradient for input "{op.input_name(i)}"')
    if torch.is_grad_enabled():
        # create_graph=True: a NumPy backward has no derivative of its own, so say so loudly if
        # anyone differentiates through these gradients instead of returning silent zeros.
        result = _refuse_double_backward(op, result)
    return result


def user_gradients(
    op: Op,
    grads: Sequence[Any],
    inputs: Sequence[Any],
    config: dict[str, Any],
    needs: Sequence[bool],
    outputs: Any,
) -> Sequence[Any]:
    """Call the op's backward (or its vjps) and return one gradient per input, None allowed."""
    n = len(inputs)
    fn = op.backward_fn or op.tensor_backward_fn
    if fn is not None:
        kwargs = config
        if op.backward_extras:
            kwargs = dict(config)
            if "needs_input_grad" in op.backward_extras:
                kwargs["needs_input_grad"] = tuple(needs)
            if "outputs" in op.backward_extras:
                kwargs["outputs"] = outputs
        try:
            if fn is op.tensor_backward_fn:
                raw = fn(*grads, *inputs, **kwargs)
            else:
                raw = call_numpy(op, fn, grads, inputs, kwargs)
        except Exception as error:
            _add_note(error, op, "backward")
            raise
        if not isinstance(raw, (tuple, list)):
            if n == 1:
                return (raw,)
            raise GradientError(
                f'npgrad op "{op.name}": backward returned a single {type(raw).__name__} for '
                f"{n} positional inputs ({_names(op, n)}); return a tuple of {n} gradients, "
                f"one per input in order, with None for an input that needs none"
            )
        if len(raw) != n:
            raise GradientError(
                f'npgrad op "{op.name}": backward returned {len(raw)} gradients for {n} '
                f"positional inputs ({_names(op, n)}); return one gradient per input, in order, "
                f"with None for an input that needs none"
            )
        return raw
    gradients: list[Any] = [None] * n
    for i in range(n):
        if not needs[i]:
            continue
        vjp = op.vjps.get(i)
        if vjp is None:
            raise _missing_backward(op, i)
        kwargs = config
        if "outputs" in op.vjp_extras[i]:
            kwargs = {**config, "outputs": outputs}
        try:
            gradients[i] = call_numpy(op, vjp, grads, inputs, kwargs)
        except Exception as error:
            _add_note(error, op, f'vjp of input "{op.input_name(i)}"')
            raise
    return gradients


def call_numpy(
    op: Op,
    fn: Any,
    leading: Sequence[Any],
    inputs: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    jvp: bool = False,
) -> Any:
    """Call ``fn(*leading, *inputs, **kwargs)``, looped over batch dims if the op has a signature.

    ``leading`` are output gradients (a backward) or input tangents (``jvp=True``), whose core
    dims are the outputs' or the inputs' in the signature. A saved ``outputs`` keyword is sliced
    per batch element too.
    """
    signature = op.signature
    if signature is None or op.vectorized:
        return fn(*leading, *inputs, **kwargs)
    cores = [*(signature.inputs if jvp else signature.outputs), *signature.inputs]
    args = [*leading, *inputs]
    outputs = kwargs.get("outputs")
    if outputs is None:
        return _batch.loop(fn, signature, op.name, args, kwargs, cores)
    single = not isinstance(outputs, tuple)
    saved = (outputs,) if single else outputs
    static = {key: value for key, value in kwargs.items() if key != "outputs"}
    count = len(args)

    def per_element(*values: Any, **config: Any) -> Any:
        mine = values[count:]
        return fn(*values[:count], outputs=mine[0] if single else mine, **config)

    return _batch.loop(
        per_element, signature, op.name, [*args, *saved], static, [*cores, *signature.outputs]
    )


def op_gradients(
    op: Op,
    grads: Sequence[torch.Tensor],
    inputs: Sequence[Any],
    outputs: Any,
    config: dict[str, Any],
    needs: Sequence[bool],
    single: bool,
) -> list[torch.Tensor | None]:
    """Return the input gradients computed with ops, so that transforms and tracing see them.

    A tensor backward is called as it is; a NumPy backward runs as the op's backward companion
    (an op itself). Either way the gradients are checked, summed down and cast to the inputs.
    """
    if op.tensor_backward_fn is not None:
        raw = user_gradients(op, grads, inputs, config, needs, outputs)
    else:
        from npgrad import _companions

        extra = (
            list(outputs if isinstance(outputs, tuple) else (outputs,)) if op.saves_outputs else []
        )
        # One dict: a companion's own config already holds these keys (its companion overrides
        # them).
        settings = {
            **config,
            _companions.N_OUTPUTS: len(grads),
            _companions.NEEDS: tuple(needs),
            _companions.SINGLE: single,
        }
        raw = op.companion("backward")(*grads, *inputs, *extra, **settings)
        raw = raw if isinstance(raw, tuple) else (raw,)
    return [
        _tensor_gradient(op, i, gradient, value)
        if needs[i] and gradient is not None and isinstance(value, torch.Tensor)
        else None
        for i, (gradient, value) in enumerate(zip(raw, inputs, strict=True))
    ]


def run_jvp(state: Call, saved: Sequence[torch.Tensor], tangents: Sequence[Any]) -> Any:
    """Return the output tangents from the op's jvp companion (any transform may be active)."""
    op = state.op
    if op.jvp_fn is None:
        raise MissingBackwardError(
            f'npgrad op "{op.name}": forward-mode AD (torch.func.jvp, jacfwd, forward_ad) needs '
            f"a jvp, and none is registered; register one with @{op.__name__}.jvp"
        )
    inputs, _ = _saved_inputs(state, saved)
    filled = [
        (torch.zeros_like(value) if isinstance(value, torch.Tensor) else 0.0)
        if tangent is None
        else tangent
        for tangent, value in zip(tangents, inputs, strict=True)
    ]
    return op.companion("jvp")(*filled, *inputs, **state.config)


def run_vmap(
    op: Op, state: Call, size: int, dims: Sequence[int | None], args: Sequence[Any]
) -> tuple[Any, Any]:
    """The vmap rule: one batched call when the op has a signature, else a loop."""
    config = state.config
    if all(d is None for d in dims):
        out = call(op, tuple(args), config)
        return out, (None,) * len(out) if isinstance(out, tuple) else None
    if op.signature is None:
        results = [
            call(
                op,
                tuple(a if d is None else a.select(d, i) for a, d in zip(args, dims, strict=True)),
                config,
            )
            for i in range(size)
        ]
        if isinstance(results[0], tuple):
            stacked = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
            return stacked, (0,) * len(stacked)
        return torch.stack(results), 0
    # Batch dims lead the core dims; the vmapped dim goes in front of all of them, and inputs
    # without it get size-1 dims there, so that NumPy-style broadcasting lines them up.
    cores = [len(core) for core in op.signature.inputs]
    ranks = [
        a.dim() - core - (d is not None) if isinstance(a, torch.Tensor) else 0
        for a, d, core in zip(args, dims, cores, strict=True)
    ]
    lead = max(ranks)
    aligned = []
    for a, d, rank in zip(args, dims, ranks, strict=True):
        if not isinstance(a, torch.Tensor):
            aligned.append(a)
            continue
        moved = a if d is None else a.movedim(d, 0)
        batched = moved.shape[:1] if d is not None else (1,)
        rest = moved.shape[1:] if d is not None else moved.shape
        aligned.append(moved.reshape(*batched, *([1] * (lead - rank)), *rest))
    out = call(op, tuple(aligned), config)
    return out, (0,) * len(out) if isinstance(out, tuple) else 0


def _saved_inputs(state: Call, saved: Sequence[torch.Tensor]) -> tuple[list[Any], Any]:
    """Return the inputs (tensors where saved, constants elsewhere) and any saved outputs."""
    slots = range(state.count) if state.slots is None else state.slots
    inputs: list[Any] = [None] * state.count if state.constants is None else list(state.constants)
    for k, i in enumerate(slots):
        inputs[i] = saved[k]
    return inputs, saved_outputs(saved[len(slots) :], state.single)


def saved_outputs(held: Sequence[Any], single: bool) -> Any:
    """Return the outputs saved after the inputs: one value, a tuple, or None if none were."""
    if not held:
        return None
    return held[0] if single else tuple(held)


def _tensor_gradient(op: Op, position: int, value: Any, tensor: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.is_complex():
        got = (
            f"a {type(value).__name__}"
            if not isinstance(value, torch.Tensor)
            else (f"a tensor of dtype {value.dtype}")
        )
        raise GradientError(
            f'npgrad op "{op.name}": tensor backward returned {got} as the gradient for input '
            f'"{op.input_name(position)}" (position {position}), expected a real tensor shaped '
            f"like the input; return a tensor (or None for no gradient)"
        )
    if value.shape != tensor.shape:
        axes = reduction_axes(tuple(value.shape), tuple(tensor.shape))
        if axes is None:
            raise GradientError(
                f'npgrad op "{op.name}": tensor backward returned a gradient of shape '
                f'{tuple(value.shape)} for input "{op.input_name(position)}" (position '
                f"{position}) of shape {tuple(tensor.shape)}; return one gradient per input, "
                f"shaped like it (or like a broadcast of it, which is summed down), or None"
            )
        value = (value.sum(dim=axes) if axes else value).reshape(tensor.shape)
    if value.dtype != tensor.dtype or value.device != tensor.device:
        value = value.to(device=tensor.device, dtype=tensor.dtype)
    if value.stride() != tensor.stride():
        # Gradients laid out like their inputs (strides and all): what DDP's buckets expect.
        value = torch.empty_like(tensor).copy_(value)
    gradient: torch.Tensor = value
    return gradient


def _gradient(
    op: Op, position: int, value: Any, tensor: torch.Tensor, device: torch.device | None
) -> torch.Tensor:
    if tensor.layout is not _STRIDED:
        return sparse_gradient(value, tensor)
    if (
        device is None
        and type(value) is np.ndarray
        and value.shape == tensor.shape
        and value.dtype.kind == "f"
        and value.dtype.isnative
        and value.flags.writeable
        and value.flags.c_contiguous
    ):
        # The common case, inlined: a fresh CPU array of the input's shape. (Size-1 dims can
        # make an array with a negative stride count as contiguous: torch refuses those.)
        try:
            gradient = torch.from_numpy(value)
        except ValueError:
            pass
        else:
            return gradient if gradient.dtype == tensor.dtype else gradient.to(tensor.dtype)
    reduced = gradient_array(op, position, value, tuple(tensor.shape))
    # Off the CPU, a 0-dim CPU input beside device tensors keeps its gradient on the CPU.
    return to_tensor(reduced, tensor.dtype, None if device is None else tensor.device)


def gradient_array(
    op: Op, position: int, value: Any, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    """Check a NumPy gradient and sum it down to its input's ``shape``, or raise GradientError."""
    value = as_array(value)
    problem = array_problem(value)
    if problem is not None:
        raise GradientError(
            f'npgrad op "{op.name}": backward returned {problem} as the gradient for input '
            f'"{op.input_name(position)}" (position {position}), expected a real ndarray '
            f"shaped like the input; return an ndarray (or None for no gradient)"
        )
    assert isinstance(value, np.ndarray)
    reduced = reduce_to_shape(value, shape)
    if reduced is None:
        raise GradientError(
            f'npgrad op "{op.name}": backward returned a gradient of shape {value.shape} for '
            f'input "{op.input_name(position)}" (position {position}) of shape {shape}; '
            f"return one gradient per input, shaped like it (or like a broadcast of it, which is "
            f"summed down), or None"
        )
    return reduced


def forward_only(op: Op, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
    """Run the op's forward on real tensors without recording a graph (a custom-op kernel)."""
    with torch.no_grad():
        return call(op, inputs, config)


class _RefuseDoubleBackward(torch.autograd.Function):
    @staticmethod
    def forward(op: Op, *grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g.clone() for g in grads)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.op = inputs[0]

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise _not_twice_differentiable(ctx.op)


def _not_twice_differentiable(op: Op) -> NotTwiceDifferentiableError:
    return NotTwiceDifferentiableError(
        f'npgrad op "{op.name}": asked for a second derivative, but its backward is written in '
        f"NumPy and is differentiable once; write the backward with npgrad ops and torch ops on "
        f"tensors (@{op.__name__}.tensor_backward) to make the op twice differentiable"
    )


def _refuse_double_backward(op: Op, result: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    present = [i for i, g in enumerate(result) if g is not None]
    if not present:
        return result
    guarded = _RefuseDoubleBackward.apply(  # type: ignore[no-untyped-call]
        op,
        *[result[i].detach().requires_grad_() for i in present],  # type: ignore[union-attr]
    )
    for i, g in zip(present, guarded, strict=True):
        result[i] = g
    return result


def _common_device(op: Op, tensors: list[torch.Tensor]) -> torch.device:
    if not tensors:
        return torch.device("cpu")
    # As in torch, 0-dim CPU tensors (scalars) may join tensors on any device.
    placed = [t for t in tensors if not (t.dim() == 0 and t.device.type == "cpu")]
    devices = {t.device for t in placed}
    if len(devices) <= 1:
        return placed[0].device if placed else tensors[0].device
    found = ", ".join(str(t.device) for t in tensors)
    raise InputError(
        f'npgrad op "{op.name}": inputs are on different devices ({found}); expected one device '
        f"(0-dim CPU tensors may join any); move them with .to(device) first"
    )


def _input_error(op: Op, position: int, value: Any) -> InputError:
    name = op.input_name(position)
    if isinstance(value, torch.Tensor) and value.is_complex():
        got = f"a complex tensor (dtype {value.dtype})"
    elif isinstance(value, (complex, np.complexfloating)) or (
        isinstance(value, np.ndarray) and value.dtype.kind == "c"
    ):
        got = f"a complex value ({type(value).__name__})"
    else:
        got = array_problem(value) or type(value).__name__
    return InputError(
        f'npgrad op "{op.name}": positional input "{name}" (position {position}) is {got}; '
        f"expected a real tensor, ndarray, number or None (complex values are not supported: pass "
        f"real and imaginary parts as separate inputs); pass static config as a keyword argument"
    )


def _missing_backward(op: Op, position: int) -> NpgradError:
    if op.parent is not None:
        return _not_twice_differentiable(op.parent)
    name = op.input_name(position)
    var = op.__name__
    how = (
        f'@{var}.vjp("{name}")'
        if op.vjps
        else f'@{var}.backward (or one per input with @{var}.vjp("{name}"))'
    )
    return MissingBackwardError(
        f'npgrad op "{op.name}": a gradient was asked for input "{name}" (position {position}), '
        f"but no backward is registered for it; register one with {how}"
    )


def _names(op: Op, n: int) -> str:
    return ", ".join(op.input_name(i) for i in range(n))


def _add_note(error: BaseException, op: Op, where: str) -> None:
    note = f'raised in the {where} of npgrad op "{op.name}" defined at {op.defined_at}'
    if isinstance(error, ValueError) and "read-only" in str(error):
        note += (
            "; npgrad passes arrays as read-only views of the caller's tensors, so a function "
            "cannot corrupt them: copy first (a = a.copy()) to write in place"
        )
    if hasattr(error, "add_note"):
        error.add_note(note)
