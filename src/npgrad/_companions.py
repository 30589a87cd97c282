"""Companion ops: an op's NumPy backward and jvp, each made an op of its own.

Under torch.func, gradients and tangents are computed under vmap and other transforms, where
they arrive as wrapped tensors that NumPy cannot read. Run as npgrad ops, with the vmap rule
every op has, they compose: ``vmap(grad(f))``, ``jacrev``, ``jacfwd``. Companions are not
registered, and asking for their own derivative is the "differentiable once" error of their op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from npgrad import _function

if TYPE_CHECKING:
    from npgrad._op import Op

# Config keys of companions, named so that they cannot clash with an op's own config.
N_OUTPUTS = "_npgrad_outputs"
NEEDS = "_npgrad_needs"
SINGLE = "_npgrad_single"


def make(op: Op, kind: str) -> Op:
    """Return a new, unregistered companion op of ``op``: "backward" or "jvp"."""
    from npgrad._op import Op

    forward = _backward_forward(op) if kind == "backward" else _jvp_forward(op)
    text = _signature_text(op, backward=kind == "backward")
    forward.__name__ = f"{op.opname}_{kind}"
    forward.__qualname__ = forward.__name__
    return Op(f"{op.namespace}::{op.opname}_{kind}", forward, signature=text,
              vectorized=True, parent=op, kind=kind)  # fmt: skip


def _backward_forward(op: Op) -> Any:
    def forward(*args: Any, **config: Any) -> tuple[Any, ...]:
        n_outputs = config.pop(N_OUTPUTS)
        needs = config.pop(NEEDS)
        single = config.pop(SINGLE)
        grads = args[:n_outputs]
        inputs = list(args[n_outputs : n_outputs + len(needs)])
        saved = args[n_outputs + len(needs) :]
        outputs = _function.saved_outputs(saved, single)
        raw = _function.user_gradients(op, grads, inputs, config, needs, outputs)
        # Every input gets an array (zeros where no gradient) of a shape known in advance: with
        # a signature, the broadcast batch and the input's core dims; without, the input's.
        result = []
        shapes = [np.shape(value) if isinstance(value, np.ndarray) else None for value in inputs]
        batch = () if op.signature is None else op.signature.bind(op.name, shapes)[0]
        for i, (gradient, value) in enumerate(zip(raw, inputs, strict=True)):
            if gradient is None:
                core = np.shape(value)
                if op.signature is not None:
                    core = core[len(core) - len(op.signature.inputs[i]) :]
                result.append(np.zeros(batch + core))
            elif op.signature is None:
                result.append(_function.gradient_array(op, i, gradient, np.shape(value)))
            else:
                result.append(np.asarray(gradient))
        return tuple(result)

    return forward


def _jvp_forward(op: Op) -> Any:
    def forward(*args: Any, **config: Any) -> Any:
        n = len(args) // 2
        return _function.call_numpy(op, op.jvp_fn, args[:n], args[n:], config, jvp=True)

    return forward


def signature(op: Op, kind: str) -> Any:
    """Return the companion's signature: the parent's core dims, rearranged (None without)."""
    from npgrad._batch import parse

    text = _signature_text(op, backward=kind == "backward")
    return None if text is None else parse(text, op.name)


def _signature_text(op: Op, *, backward: bool) -> str | None:
    if op.signature is None:
        return None

    def text(groups: tuple[tuple[str, ...], ...]) -> str:
        return ",".join(f"({','.join(group)})" for group in groups)

    inputs, outputs = op.signature.inputs, op.signature.outputs
    if backward:
        extra = outputs if op.saves_outputs else ()
        return f"{text(outputs + inputs + extra)}->{text(inputs)}"
    return f"{text(inputs + inputs)}->{text(outputs)}"
