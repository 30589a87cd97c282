"""`Layer`: an nn.Module whose Parameters fill some of an op's positional inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from npgrad._op import Op
from npgrad.errors import DefinitionError, InputError


class Layer(nn.Module):
    """Wrap an op in an nn.Module, holding some of its inputs as Parameters.

    Keyword tensors named after positional inputs of the op become Parameters (floating) or
    buffers (integer, bool, or an input the op declares nondifferentiable) under those names;
    numbers and tuples of numbers for them are kept as constants; other keywords are config
    passed on every call. Calling the layer fills the op's remaining positional inputs from its
    arguments, in order or by name.

    Args:
        op: the op to wrap.
        **values: tensors (or arrays) for some positional inputs, and keyword config.

    Examples:
        >>> import numpy as np, torch, npgrad
        >>> @npgrad.op("doc::affine")
        ... def affine(x, w, b, *, power=1):
        ...     return (x @ w + b) ** power
        >>> layer = npgrad.Layer(affine, w=torch.eye(2), b=torch.zeros(2))
        >>> layer(torch.ones(3, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(self, op: Op, **values: Any) -> None:
        super().__init__()
        if not isinstance(op, Op):
            raise DefinitionError(
                f"npgrad.Layer: expected an npgrad op (made with @npgrad.op) as the first "
                f"argument, got {type(op).__name__}; decorate the function with @npgrad.op first"
            )
        self.op = op
        self.config: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        held = set()
        for name, value in values.items():
            if name in op._rules.input_names:
                self._hold(name, value)
                held.add(name)
            elif name in op._rules.config_names:
                self.config[name] = value
            else:
                raise DefinitionError(
                    f'npgrad.Layer of op "{op.name}": keyword "{name}" is neither a positional '
                    f"input ({', '.join(op._rules.input_names)}) nor config "
                    f"({', '.join(sorted(op._rules.config_names)) or 'none'}); use one of "
                    f"those names"
                )
        self.free_inputs = tuple(name for name in op._rules.input_names if name not in held)

    def _hold(self, name: str, value: Any) -> None:
        if value is None:
            # An absent optional input, as nn.Conv2d's bias=False: the attribute reads None.
            self.register_parameter(name, None)
            return
        if _is_constant(value):
            self.constants[name] = value
            return
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise DefinitionError(
                f'npgrad.Layer of op "{self.op.name}": input "{name}" was given a '
                f"{type(value).__name__}; expected a tensor or ndarray (held as a Parameter or "
                f"buffer), or a number or tuple of numbers (held as a constant)"
            )
        position = self.op._rules.input_names.index(name)
        if (value.is_floating_point() or value.is_complex()) and (
            position not in self.op._rules.nondifferentiable
        ):
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def forward(self, *inputs: Any, **config: Any) -> Any:
        """Call the op with ``inputs`` in the free positions and the held values in theirs."""
        given = dict(zip(self.free_inputs, inputs, strict=False))
        by_name = [key for key in config if key in self.free_inputs]
        for name in by_name:
            if name in given:
                raise InputError(
                    f'npgrad.Layer of op "{self.op.name}": input "{name}" was given both by '
                    f"position and by name; give it once"
                )
            given[name] = config.pop(name)
        rules = self.op._rules
        defaults = dict(zip(rules.input_names[::-1], rules.input_defaults[::-1], strict=False))
        for name in self.free_inputs:
            if name not in given and name in defaults:
                given[name] = defaults[name]
        if len(inputs) > len(self.free_inputs) or len(given) != len(self.free_inputs):
            raise InputError(
                f'npgrad.Layer of op "{self.op.name}": called with {len(inputs)} inputs '
                f"by position and {len(by_name)} by name, expected "
                f"{len(self.free_inputs)} ({', '.join(self.free_inputs)}), in order or by name; "
                f"the layer holds the rest"
            )
        args = [
            given[name]
            if name in given
            else self.constants[name]
            if name in self.constants
            else getattr(self, name)
            for name in rules.input_names
        ]
        return self.op(*args, **(self.config | config if config else self.config))

    def extra_repr(self) -> str:
        held = [
            f"{name}={tuple(tensor.shape)}"
            for name, tensor in (
                *self.named_parameters(recurse=False),
                *self.named_buffers(recurse=False),
            )
        ]
        config = [f"{key}={value!r}" for key, value in (self.constants | self.config).items()]
        return ", ".join([self.op.name, *held, *config])


def _is_constant(value: Any) -> bool:
    """Whether ``value`` is a number, or a tuple or list of numbers: held as it is."""
    numbers = (bool, int, float, np.bool_, np.integer, np.floating)
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, numbers) for v in value)
    return isinstance(value, numbers)
