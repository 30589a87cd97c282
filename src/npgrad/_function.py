"""The two autograd.Functions generated for each op, and what their backward chooses.

- The eager Function (``forward(ctx, state, *inputs)``) is what an ordinary call with inputs
  needing gradients applies. It defines no ``setup_context``, so ``Function.apply`` binds no
  arguments (``inspect.signature`` on every call, the largest part of a small op's overhead).
- The transformable Function (``forward`` + ``setup_context``, ``jvp``, ``vmap``) is the form
  torch.func and forward-mode AD require; calls under them apply it.

Both share one backward: a tensor backward is called on the saved tensors; a NumPy backward
runs on the arrays the forward saw when nothing can differentiate its result again, and as its
companion op otherwise (``create_graph=True``, torch.func transforms, batched gradients), so
that a derivative through it is a named error wherever it is asked for.
"""

from __future__ import annotations

from typing import Any

import torch

from npgrad import _torch_internals as internals
from npgrad._convert import differentiable, to_numpy_all
from npgrad._forward import Call, run_forward
from npgrad._gradients import (
    companion_gradients,
    missing_backward,
    not_twice_differentiable,
    numpy_gradients,
    tensor_gradients,
)
from npgrad._rules import Runtime
from npgrad._tangents import tangents
from npgrad._vmap import rule

_Tensor = torch.Tensor
_transforms_active = internals.transforms_active
_grad_enabled = torch.is_grad_enabled


def build(core: Runtime) -> tuple[type[torch.autograd.Function], type[torch.autograd.Function]]:
    """Return the eager and the transformable autograd.Function of ``core``, named after it."""
    rules = core._rules

    def forward_eager(ctx: Any, state: Call, *args: Any) -> Any:
        output = run_forward(state, args, True)
        _save(ctx, state, args, output, forward_mode=False)
        return output

    def forward(state: Call, *args: Any) -> Any:
        return run_forward(state, args, True)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _save(ctx, inputs[0], inputs[1:], output, forward_mode=True)

    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        state: Call = ctx.state
        if grads[0] is None or (len(grads) > 1 and any(g is None for g in grads)):
            # Undefined output gradients (materialisation is off): none at all means no
            # gradients, as torch's own ops answer (a zero sparse gradient is no answer for
            # torch's checks); some are zeros.
            if all(g is None for g in grads):
                return (None,) * len(ctx.needs_input_grad)
            grads = _materialized(grads, state)
        if state.rules.backward is not None and not _grad_enabled() and not _transforms_active():
            # _backward's common case, inlined: a NumPy backward whose result is not recorded.
            try:
                arrays = to_numpy_all(grads)
            except RuntimeError:  # batched or wrapped gradients (see _readable)
                pass
            else:
                saved, needs = ctx.saved_tensors, ctx.needs_input_grad[1:]
                return (None, *numpy_gradients(state, saved, arrays, needs))
        return (None, *_backward(core, ctx, grads))

    def jvp(ctx: Any, _: Any, *input_tangents: torch.Tensor | None) -> Any:
        return tangents(core._companions.get("jvp"), ctx.state, ctx.saved_tensors, input_tangents)

    def vmap(info: Any, in_dims: tuple[int | None, ...], state: Call, *args: Any) -> Any:
        return rule(core, state.config, info.batch_size, in_dims[1:], args)

    name = f"{rules.namespace}_{rules.opname}"
    documented = {"__module__": __name__, "__doc__": f"The autograd.Function of {rules.name}."}
    eager = type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward_eager), "backward": staticmethod(backward), **documented},
    )
    transformable = type(
        name,
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward),
            "jvp": staticmethod(jvp),
            "vmap": staticmethod(vmap),
            **documented,
        },
    )
    return eager, transformable


def _save(ctx: Any, state: Call, args: tuple[Any, ...], output: Any, forward_mode: bool) -> None:
    """Keep what the backward (and, in forward mode, the jvp) will need."""
    ctx.state = state
    rules = state.rules
    if (
        type(output) is _Tensor
        and state.slots is None
        and rules.keeps_only_inputs
        and not forward_mode
        and rules.tensor_backward is None
    ):
        # The common case: one output, every input a tensor, nothing else to keep.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*args)
        if not differentiable(output.dtype):
            ctx.mark_non_differentiable(output)
        return
    state.single = not isinstance(output, tuple)
    outputs = (output,) if state.single else output
    inputs = list(args) if state.slots is None else [args[i] for i in state.slots]
    if rules.tensor_backward is not None:
        # The tensor backward works on the saved tensors: drop the arrays (copies for half
        # floats and device tensors).
        state.arrays = ()
    ctx.save_for_backward(*inputs, *(outputs if rules.saves_outputs else ()))
    state.output_meta = tuple((tuple(o.shape), o.dtype, o.device) for o in outputs)
    # Gradients of outputs without one arrive as None, not zeros (the backward fills in
    # zeros, or answers None for none at all), and so do tangents of inputs without one: a rule
    # differentiable in some inputs only (a Bessel function's order) must know which were
    # asked for.
    ctx.set_materialize_grads(False)
    if forward_mode:
        jvp = rules.jvp or rules.tensor_jvp
        if jvp is None and rules.tensor_backward is not None:
            ctx.save_for_forward(*inputs, *outputs)  # forward mode from the tensor backward
        elif jvp is not None:
            ctx.save_for_forward(*inputs, *(outputs if "outputs" in jvp.takes else ()))
    frozen = [t for t in outputs if not differentiable(t.dtype)]
    if frozen:
        ctx.mark_non_differentiable(*frozen)


def _backward(
    core: Runtime, ctx: Any, grads: tuple[torch.Tensor, ...]
) -> list[torch.Tensor | None]:
    state: Call = ctx.state
    rules = state.rules
    needs = ctx.needs_input_grad[1:]
    saved = ctx.saved_tensors
    if rules.tensor_backward is not None:
        return tensor_gradients(state, saved, grads, needs)
    if not (rules.backward or rules.vjps):
        if rules.parent is not None:
            raise not_twice_differentiable(rules.parent)
        raise missing_backward(rules, next(i for i, need in enumerate(needs) if need))
    if not _transforms_active() and not (_grad_enabled() and _recorded(saved, grads)):
        arrays = _readable(grads)
        if arrays is not None:
            return numpy_gradients(state, saved, arrays, needs)
    return companion_gradients(core._companions["backward"], state, saved, grads, needs)


def _materialized(grads: tuple[torch.Tensor, ...], state: Call) -> tuple[torch.Tensor, ...]:
    """Return the output gradients with zeros where torch left one out (None)."""
    if all(g is not None for g in grads):
        return grads
    return tuple(
        torch.zeros(shape, dtype=dtype, device=device) if g is None else g
        for g, (shape, dtype, device) in zip(grads, state.output_meta, strict=True)
    )


def _readable(grads: tuple[torch.Tensor, ...]) -> list[Any] | None:
    """Return the gradients as arrays, or None where NumPy cannot read them.

    Batched tensors (vmap over a vjp, torch's batched gradients) and other wrapped ones fail
    at the conversion, before any of the op's code runs: their backward runs as the companion.
    """
    try:
        return to_numpy_all(grads)
    except RuntimeError:
        return None


def _recorded(saved: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...]) -> bool:
    """Whether gradients computed now (in grad mode) are recorded for differentiation."""
    return any(t.requires_grad for t in saved) or any(g.requires_grad for g in grads)
