"""Calling a user's gradient rule: the keywords it takes filled in, looped over batch dims.

A rule (a backward, a vjp, a jvp) is called with the output gradients or input tangents, the
op's inputs and its config; npgrad fills the keyword-only parameters it declares beyond the
config (``needs_input_grad``, ``outputs``, and residuals of ``@op.save`` by name). With a
signature, a NumPy rule sees one batch element at a time, and so do its saved outputs and
residuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from npgrad import _batch
from npgrad._rules import FILLED, Rule, Rules
from npgrad.errors import DefinitionError


def call_rule(
    rules: Rules,
    rule: Rule,
    leading: Sequence[Any],
    inputs: Sequence[Any],
    config: dict[str, Any],
    needs: Sequence[bool] | None,
    outputs: Any,
    residuals: Any,
    tensor: bool = False,
    *,
    jvp: bool = False,
) -> Any:
    """Call ``rule(*leading, *inputs, **config)`` with the keywords it takes filled in.

    ``leading`` are output gradients, or input tangents (``jvp=True``). A NumPy rule of an op
    with a signature is looped over the batch dims, with its saved outputs and residuals sliced
    per batch element like the inputs.
    """
    fn = rule.fn
    looped = rules.looped and not tensor and not rule.batched
    if rule.config_only and not looped:
        return fn(*leading, *inputs, **config)
    signature = rules.signature
    kwargs = config
    if rule.takes or rule.any_keyword:
        kwargs = dict(config)
        if "needs_input_grad" in rule.takes:
            kwargs["needs_input_grad"] = tuple(needs or ())
        if "outputs" in rule.takes:
            kwargs["outputs"] = outputs
    wanted = _residual_names(rules, rule, residuals)
    if not looped:
        if wanted:
            kwargs = {**kwargs, **_pick(residuals, wanted)}
        return fn(*leading, *inputs, **kwargs)
    assert signature is not None
    cores: list[tuple[str, ...]] = [
        *(signature.inputs if jvp else signature.outputs),
        *signature.inputs,
    ]
    args = [*leading, *inputs]
    per_call = kwargs
    count = len(args)
    sliced_outputs = "outputs" in rule.takes and outputs is not None
    results = signature.outputs if jvp else signature.inputs
    if not sliced_outputs and not wanted:
        return _batch.loop(fn, signature, rules.name, args, kwargs, cores, results=results)
    single = not isinstance(outputs, tuple)
    if sliced_outputs:
        per_call = {key: value for key, value in kwargs.items() if key != "outputs"}
        saved = (outputs,) if single else outputs
        args.extend(saved)
        cores.extend(signature.outputs)
    if wanted:
        # One dict of residuals per batch element (an object array with the forward's batch
        # shape), or one for the whole call: a column sliced, or repeated, like an input.
        args.append(residuals)
        cores.append(())

    def per_element(*values: Any, **keywords: Any) -> Any:
        if sliced_outputs:
            mine = values[count : count + len(signature.outputs)]
            keywords["outputs"] = mine[0] if single else tuple(mine)
        if wanted:
            keywords.update(_pick(values[-1], wanted))
        return fn(*values[:count], **keywords)

    return _batch.loop(per_element, signature, rules.name, args, per_call, cores, results=results)


def _residual_names(rules: Rules, rule: Rule, residuals: Any) -> frozenset[str]:
    if isinstance(residuals, np.ndarray) and residuals.size == 0:
        return frozenset()  # an empty batch: the rule is never called
    available = frozenset() if residuals is None else _keys(residuals)
    missing = rule.required - FILLED - available
    if missing:
        raise DefinitionError(
            f'npgrad op "{rules.name}": a gradient rule takes keyword-only parameter(s) '
            f"{sorted(missing)}, which are neither config nor residuals "
            f"(@{rules.variable}.save returned {sorted(available) or 'none'}); return them from "
            f"@{rules.variable}.save, or give them defaults"
        )
    return available if rule.any_keyword else (rule.takes - FILLED) & available


def _keys(residuals: Any) -> frozenset[str]:
    if isinstance(residuals, np.ndarray):
        return frozenset(residuals.flat[0])
    return frozenset(residuals)


def _pick(residuals: Any, names: frozenset[str]) -> dict[str, Any]:
    if isinstance(residuals, np.ndarray):
        # A looped op's residuals, for a rule called once for the whole batch (a tensor
        # backward): each residual as an object array of per-element values.
        return {name: _column(residuals, name) for name in names}
    return {name: residuals[name] for name in names}


def _column(residuals: Any, name: str) -> Any:
    column = np.empty(residuals.shape, dtype=object)
    for index, entry in np.ndenumerate(residuals):
        column[index] = entry[name]
    return column
