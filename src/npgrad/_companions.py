"""Companion ops: an op's NumPy backward and NumPy jvp, each made an op of its own.

Gradients and tangents are not always computed where NumPy can see them: under torch.func they
arrive as wrapped tensors, under batched gradients as batched ones, and with
``create_graph=True`` they are recorded for differentiation. Run as ops, with the vmap rule,
custom op and autograd.Function every op has, the NumPy rules compose with all of these; and the
companion's own derivative is the op's `NotTwiceDifferentiableError`, wherever it is asked for.

Each companion states what it takes:

- backward ``<op>_backward(*grads, *inputs, *outputs, needs_input_grad, single_output,
  residuals=None, **config)``: the output gradients, the op's inputs, and its outputs when a
  rule takes them; one bool per input saying which gradients are needed; whether the op
  returned one array rather than a tuple; the call's residuals (None: computed again by
  ``@op.save``, as in a trace). Returns one gradient per input, zeros where none is needed, so
  that every call has the same outputs.
- jvp ``<op>_jvp(*tangents, *inputs, *outputs, input_count, single_output, differentiable,
  residuals=None, **config)``: one tangent per input, the inputs, the outputs when the jvp
  takes them; one bool per output saying which are differentiable (floating). Returns the output
  tangents, zeros of shape () for outputs that are not differentiable.

With a signature, a companion's signature is its op's core dims rearranged; companions are
made when a backward or jvp is registered (torch.library cannot define ops during a trace) and
are never registered by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npgrad._batch import parse, regrouped
from npgrad._calls import call_rule
from npgrad._convert import gradient_array
from npgrad._dispatch import Core
from npgrad._forward import add_note, residuals_of
from npgrad._gradients import (
    none_for_a_needed_gradient,
    none_for_a_tangent,
    saved_outputs,
    user_gradients,
    wrong_tangent_count,
)
from npgrad._rules import COMPANION_KEYWORDS, Rules


def refresh(parent: Core) -> None:
    """Make, or bring up to date, the companions that the op's rules call for."""
    rules = parent._rules
    wanted = {"backward": rules.backward is not None or bool(rules.vjps), "jvp": rules.jvp}
    for kind, needed in wanted.items():
        if not needed:
            continue
        made = _rules(parent, kind)
        existing = parent._companions.get(kind)
        if existing is None:
            parent._companions[kind] = Core(made)
        else:
            existing._rules = made


def _rules(parent: Core, kind: str) -> Rules:
    rules = parent._rules
    forward = _backward(parent) if kind == "backward" else _jvp(parent)
    forward.__name__ = forward.__qualname__ = f"{rules.opname}_{kind}"
    text = _signature_text(rules, kind)
    return Rules(
        name=f"{rules.namespace}::{rules.opname}_{kind}",
        forward=forward,
        input_names=(),
        varargs_name="args",
        config_names=rules.config_names | COMPANION_KEYWORDS[kind].keys(),
        input_defaults=(),
        signature=None if text is None else parse(text, rules.name),
        vectorized=True,
        defined_at=rules.defined_at,
        module=rules.module,
        kind=kind,
        parent=rules,
    )


def _backward(parent: Core) -> Any:
    def forward(
        *args: Any,
        needs_input_grad: tuple[bool, ...],
        single_output: bool,
        residuals: Any = None,
        **config: Any,
    ) -> tuple[Any, ...]:
        rules = parent._rules
        count = len(needs_input_grad)
        n_outputs = (len(args) - count) // (2 if rules.saves_outputs else 1)
        grads = args[:n_outputs]
        inputs = list(args[n_outputs : n_outputs + count])
        outputs = saved_outputs(args[n_outputs + count :], single_output)
        if residuals is None and rules.save is not None:
            residuals = residuals_of(rules, inputs, config)
        raw = user_gradients(rules, grads, inputs, config, needs_input_grad, outputs, residuals)
        # Every input gets an array (zeros where no gradient) of a shape known in advance: with
        # a signature, the broadcast batch and the input's core dims; without, the input's.
        signature = rules.signature
        batch: tuple[int, ...] = ()
        if signature is not None:
            # The batch of the whole call: the output gradients may bring batch dims of their
            # own (vmap over a vjp, batched gradients) that the inputs lack.
            together = regrouped(signature.text, signature.outputs + signature.inputs, ())
            shapes = tuple(
                [a.shape if isinstance(a, np.ndarray) else None for a in args[: n_outputs + count]]
            )
            batch = together.bind_outputs(rules.name, shapes)[0]
        result = []
        for i, (gradient, value) in enumerate(zip(raw, inputs, strict=True)):
            shape = np.shape(value)
            if signature is not None:
                shape = batch + shape[len(shape) - len(signature.inputs[i]) :]
            if gradient is None:
                if needs_input_grad[i]:
                    raise none_for_a_needed_gradient(rules, i)
                result.append(np.zeros(shape))
            elif hasattr(gradient, "toarray"):
                # A scipy.sparse gradient of a sparse input: an op's outputs are dense; the
                # policy keeps the input's pattern again.
                result.append(gradient.toarray())
            else:
                # Checked here, where it is an array; without a signature, summed down too.
                result.append(gradient_array(gradient, None if signature else shape, i, rules))
        return tuple(result)

    return forward


def _jvp(parent: Core) -> Any:
    def forward(
        *args: Any,
        input_count: int,
        single_output: bool,
        differentiable: tuple[bool, ...],
        residuals: Any = None,
        **config: Any,
    ) -> Any:
        rules = parent._rules
        assert rules.jvp is not None
        tangents = args[:input_count]
        inputs = args[input_count : 2 * input_count]
        outputs = saved_outputs(args[2 * input_count :], single_output)
        if residuals is None and rules.save is not None:
            residuals = residuals_of(rules, inputs, config)
        try:
            result = call_rule(
                rules, rules.jvp, tangents, inputs, config, None, outputs, residuals, jvp=True
            )
        except Exception as error:
            add_note(error, rules, "jvp")
            raise
        got = tuple(result) if isinstance(result, (tuple, list)) else (result,)
        if len(got) != len(differentiable):
            raise wrong_tangent_count(rules, len(got), len(differentiable))
        checked = []
        for k, (tangent, floating) in enumerate(zip(got, differentiable, strict=True)):
            if not floating:
                checked.append(np.zeros(()))  # torch takes None there: see _tangents
            elif tangent is None:
                raise none_for_a_tangent(rules, k)
            else:
                checked.append(tangent)
        return checked[0] if single_output else tuple(checked)

    return forward


def _signature_text(rules: Rules, kind: str) -> str | None:
    if rules.signature is None:
        return None

    def text(groups: tuple[tuple[str, ...], ...]) -> str:
        return ",".join(f"({','.join(group)})" for group in groups)

    inputs, outputs = rules.signature.inputs, rules.signature.outputs
    if kind == "backward":
        extra = outputs if rules.saves_outputs else ()
        return f"{text(outputs + inputs + extra)}->{text(inputs)}"
    takes_outputs = rules.jvp is not None and "outputs" in rules.jvp.takes
    return f"{text(inputs + inputs + (outputs if takes_outputs else ()))}->{text(outputs)}"
