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
    buffers (integer, bool) under those names; other keywords are config passed on every call.
    Calling the layer fills the op's remaining positional inputs, in order, from its arguments.

    Args:
        op: the op to wrap.
        **values: tensors (or arrays) for some positional inputs, and keyword config.

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
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise DefinitionError(
                f'npgrad.Layer of op "{self.op.name}": input "{name}" was given a '
                f"{type(value).__name__}, expected a tensor or ndarray to hold as a Parameter; "
                f"pass numbers when calling the layer instead"
            )
        if value.is_floating_point():
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def forward(self, *inputs: Any, **config: Any) -> Any:
        """Call the op with ``inputs`` in the free positions and the held tensors in theirs."""
        if len(inputs) != len(self.free_inputs):
            raise InputError(
                f'npgrad.Layer of op "{self.op.name}": called with {len(inputs)} inputs, expected '
                f"{len(self.free_inputs)} ({', '.join(self.free_inputs)}); the layer holds the rest"
            )
        given = dict(zip(self.free_inputs, inputs, strict=True))
        args = [
            given[name] if name in given else getattr(self, name)
            for name in self.op._rules.input_names
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
        config = [f"{key}={value!r}" for key, value in self.config.items()]
        return ", ".join([self.op.name, *held, *config])
