"""The tensor <-> ndarray boundary, and the policies that govern it.

Design requirements, one place each:

- memory: CPU tensors reach NumPy without a copy; results come back through ``from_numpy`` and
  are copied only when torch cannot take them as they are (negative strides, read-only memory,
  non-native byte order).
- safety: user code sees read-only views, so a forward cannot write into a caller's tensor; a
  result that is a view of an input is therefore read-only too, and is copied on the way back.
- dtype: float16 and bfloat16 are computed in float32 (complex32 in complex64); floating and
  complex results take the promotion of the floating and complex inputs, as torch promotes,
  real results of complex inputs its real counterpart; integer and bool results keep their
  dtype. A complex gradient of a real input is its real part, as torch's own ops give it.
- device: NumPy runs on the CPU; results and gradients go back to the inputs' device.
- gradients: one policy for NumPy and tensor backwards alike (`gradient_for`): a gradient shaped
  like a broadcast of its input is summed down to the input's shape, any other shape is an error;
  it is cast to the input's dtype and device, and laid out like the input (what DDP's buckets
  expect).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from npgrad.errors import GradientError

# NumPy has no bfloat16 nor complex32, and SciPy rarely accepts float16: computed in float32
# (complex64).
_COMPUTE_DTYPE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.complex32: torch.complex64,
}
_STRIDED = torch.strided

Array = np.ndarray[Any, Any]
# For messages about a gradient: the op's name, the rule that gave it ("backward", "tensor
# backward", 'vjp of input "x"'), the input's name and its position.
Where = tuple[str, str, str, int]


class Describes(Protocol):
    """What names a gradient in messages: an op's rules."""

    def describe(self, position: int) -> Where: ...


def to_numpy(tensor: torch.Tensor) -> Any:
    """Return a read-only ndarray of ``tensor``'s memory (a scipy.sparse matrix if sparse).

    A copy only off the CPU, for half floats, or for sparse tensors.
    """
    if tensor.dtype in _COMPUTE_DTYPE:
        tensor = tensor.to(_COMPUTE_DTYPE[tensor.dtype])
    # force=True detaches, moves to the CPU and resolves conj/neg bits; a plain CPU tensor is
    # returned as a view of the same memory.
    try:
        array: Array = tensor.numpy(force=True)
    except TypeError:
        return to_scipy_sparse(tensor)
    array.setflags(write=False)
    return array


def to_scipy_sparse(tensor: torch.Tensor) -> Any:
    """Return a sparse (COO or CSR) 2-D tensor as a new ``scipy.sparse.csr_matrix``."""
    import scipy.sparse  # only sparse inputs pay for it

    if tensor.dim() != 2 or tensor.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise TypeError(
            f"npgrad takes sparse tensors of layout sparse_coo or sparse_csr with 2 dims; got "
            f"{tensor.layout} with {tensor.dim()} dims; convert it with .to_dense() or "
            f".to_sparse_csr() first"
        )
    tensor = tensor.detach().cpu()
    if tensor.layout == torch.sparse_coo:
        tensor = tensor.coalesce()  # once: sparse_pattern finds it coalesced already
    rows, cols = sparse_pattern(tensor)
    values = tensor.values()
    if values.dtype in _COMPUTE_DTYPE:
        values = values.to(_COMPUTE_DTYPE[values.dtype])
    return scipy.sparse.csr_matrix((values.numpy(), (rows, cols)), shape=tuple(tensor.shape))


def sparse_pattern(tensor: torch.Tensor) -> tuple[Array, Array]:
    """Return the row and column of each stored value of a 2-D COO or CSR tensor, in order."""
    tensor = tensor.detach().cpu()
    if tensor.layout == torch.sparse_coo:
        indices = tensor.coalesce().indices().numpy()
        return indices[0].copy(), indices[1].copy()
    crow = tensor.crow_indices().numpy()
    rows = np.repeat(np.arange(len(crow) - 1), np.diff(crow))
    return rows, tensor.col_indices().numpy().copy()


def sparse_gradient(value: Any, tensor: torch.Tensor) -> torch.Tensor:
    """Return a gradient (dense array or scipy matrix) for a sparse input, with its pattern."""
    rows, cols = sparse_pattern(tensor)
    if hasattr(value, "tocsr"):
        values = np.asarray(value.tocsr()[rows, cols]).ravel()
    else:
        values = np.asarray(value)[rows, cols]
    data = torch.from_numpy(np.ascontiguousarray(values)).to(dtype=tensor.dtype)
    if tensor.layout == torch.sparse_coo:
        indices = torch.from_numpy(np.stack([rows, cols]))
        result = torch.sparse_coo_tensor(
            indices, data, tensor.shape, is_coalesced=True, check_invariants=False
        )
    else:
        source = tensor.detach()
        result = csr_tensor(
            source.crow_indices().cpu(), source.col_indices().cpu(), data, tensor.shape
        )
    return result.to(tensor.device)


def csr_tensor(
    crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: Any
) -> torch.Tensor:
    """Return a CSR tensor of a pattern taken from a valid one, without torch's notices.

    The invariants hold by construction (the pattern is an input's), so they are not checked;
    torch's note that CSR support is in beta is not the user's business.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def to_numpy_all(tensors: Sequence[torch.Tensor]) -> list[Any]:
    """Return `to_numpy` of each tensor; the loop inlined, as it runs on every call."""
    arrays = []
    for tensor in tensors:
        if tensor.dtype in _COMPUTE_DTYPE:
            arrays.append(to_numpy(tensor))
            continue
        try:
            array = tensor.numpy(force=True)
        except TypeError:
            arrays.append(to_scipy_sparse(tensor))  # a sparse tensor: no strided memory
            continue
        array.setflags(write=False)
        arrays.append(array)
    return arrays


def differentiable(dtype: torch.dtype) -> bool:
    """Whether values of ``dtype`` have gradients: floating and complex ones."""
    return dtype.is_floating_point or dtype.is_complex


def floating_result_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """Return the floating (or complex) dtype torch would give an op on ``tensors``.

    Dimensioned tensors take precedence over 0-dim ones, as in torch's own type promotion; with
    no floating or complex tensor at all, the result is torch's default dtype (as
    ``torch.sqrt`` of an int). A float32 and a complex64 give complex64; a float64 and a
    complex64, complex128.
    """
    dtypes = {tensor.dtype for tensor in tensors}
    if len(dtypes) == 1:
        (only,) = dtypes
        if differentiable(only):
            return only
    dimensioned: torch.dtype | None = None
    scalar: torch.dtype | None = None
    for tensor in tensors:
        dtype = tensor.dtype
        if not differentiable(dtype):
            continue
        if tensor.dim():
            dimensioned = dtype if dimensioned is None else torch.promote_types(dimensioned, dtype)
        else:
            scalar = dtype if scalar is None else torch.promote_types(scalar, dtype)
    if dimensioned is not None:
        return dimensioned
    if scalar is not None:
        return scalar
    return torch.get_default_dtype()


def array_problem(value: object) -> str | None:
    """Say why ``value`` cannot become a tensor, or return None when it can."""
    if not isinstance(value, np.ndarray):
        return f"a {type(value).__name__}"
    kind = value.dtype.kind
    if (kind == "f" and value.dtype.itemsize > 8) or (kind == "c" and value.dtype.itemsize > 16):
        return f"an array of dtype {value.dtype} (long double: torch has no such dtype)"
    if kind in "biufc":
        return None
    return f"an array of dtype {value.dtype}"


def as_array(value: object) -> object:
    """Turn NumPy scalars and Python numbers into 0-dim arrays; leave everything else alone."""
    if isinstance(value, (np.generic, int, float)):
        return np.asarray(value)
    return value


def to_tensor(array: Array, dtype: torch.dtype | None, device: torch.device | None) -> torch.Tensor:
    """Return ``array`` as a tensor of ``dtype`` (None: keep) on ``device`` (None: the CPU).

    The tensor shares the array's memory unless torch cannot view it, or a cast or move is needed.
    """
    if not array.flags.writeable:
        array = array.copy()
    try:
        tensor = torch.from_numpy(array)
    except (ValueError, TypeError):
        # Negative strides or a non-native byte order: torch cannot view this memory. A real
        # copy: ascontiguousarray keeps an array whose only negative stride is on a size-1 dim.
        array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
        tensor = torch.from_numpy(array)
    if device is not None:
        return tensor.to(device=device, dtype=dtype)
    if dtype is not None and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor


def reduce_to_shape(grad: Array, shape: tuple[int, ...]) -> Array | None:
    """Sum ``grad`` down to ``shape`` when ``grad`` is shaped like a broadcast of it, else None.

    Examples:
        >>> reduce_to_shape(np.ones((4, 3)), (1, 3)).tolist()
        [[4.0, 4.0, 4.0]]
    """
    have = grad.shape
    if have == shape:
        return grad
    key = (have, shape)
    found = _reductions.get(key)
    if found is None:
        if len(_reductions) > 4096:  # shapes of a long-running program: keep the cache small
            _reductions.clear()
        axes = reduction_axes(have, shape)
        found = _reductions[key] = (axes, len(have) == len(shape))
    axes, same_rank = found
    if axes is None:
        return None
    if not axes:
        return grad.reshape(shape)
    if same_rank:
        # Only size-1 dims are summed: keepdims gives the shape without a reshape (a third
        # of the cost of a small gradient's reduction).
        kept: Array = np.add.reduce(grad, axis=axes, keepdims=True)
        return kept
    reduced: Array = np.add.reduce(grad, axis=axes).reshape(shape)
    return reduced


# (gradient shape, input shape) -> (axes to sum or None, same rank): every backward of an op
# with a broadcast input asks again.
_reductions: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...] | None, bool]] = {}


def reduction_axes(have: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Return the axes of ``have`` to sum so that it reshapes to ``shape``, or None if none do.

    ``have`` must be a broadcast of ``shape``, or hold the same values with size-1 dims added or
    removed (a () gradient for a (1, 1) input).

    Examples:
        >>> reduction_axes((2, 4, 3), (4, 1))
        (0, 2)
    """
    lead = len(have) - len(shape)
    if lead < 0:
        if math.prod(have) == math.prod(shape) and _squeezed(have) == _squeezed(shape):
            return ()
        return None
    axes = list(range(lead))
    for i, size in enumerate(shape):
        if size != have[lead + i]:
            if size != 1:
                return None
            axes.append(lead + i)
    return tuple(axes)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def gradient_for(
    value: Any,
    input: torch.Tensor,
    device: torch.device | None,
    position: int,
    op: Describes,
) -> torch.Tensor:
    """Return ``value`` (an ndarray or a tensor) as the gradient of input ``position``, or raise.

    Checked (a real array or tensor of the input's shape or of a broadcast of it), summed down
    to the input's shape, cast to its dtype, on its device (``device`` is None when the call ran
    on the CPU), laid out like it. ``op.describe(position)`` says, for messages, which op, rule
    and input it is.
    """
    if (
        type(value) is np.ndarray
        and device is None
        and value.shape == input.shape
        and value.dtype.kind == "f"
        and value.dtype.isnative
        and value.flags.writeable
        and value.flags.c_contiguous
        and input.layout is _STRIDED
    ):
        # The common case, inlined: a fresh CPU array of the input's shape. (Size-1 dims can
        # make an array with a negative stride count as contiguous: torch refuses those.)
        try:
            gradient = torch.from_numpy(value)
        except ValueError:
            pass
        else:
            # Laid out as NumPy made it, C-contiguous: for a parameter of another layout,
            # AccumulateGrad copies it into the parameter's (torch's gradient layout contract).
            return gradient if gradient.dtype == input.dtype else gradient.to(input.dtype)
    if isinstance(value, torch.Tensor):
        return _tensor_gradient(value, input, op.describe(position))
    if input.layout is not _STRIDED:
        return sparse_gradient(value, input)
    reduced = gradient_array(value, tuple(input.shape), position, op)
    if reduced.dtype.kind == "c" and not input.is_complex():
        reduced = reduced.real  # a real input's gradient: torch's convention takes this part
    # Off the CPU, a 0-dim CPU input beside device tensors keeps its gradient on the CPU.
    gradient = to_tensor(reduced, input.dtype, None if device is None else input.device)
    return gradient if input.is_contiguous() else _laid_out_like(gradient, input)


def gradient_array(
    value: Any, shape: tuple[int, ...] | None, position: int, op: Describes
) -> Array:
    """Check a NumPy gradient and sum it down to ``shape`` (None: as it is), or raise."""
    array: Array = value
    if type(value) is not np.ndarray or value.dtype.kind != "f" or value.dtype.itemsize > 8:
        checked = as_array(value)
        problem = array_problem(checked)
        if problem is not None:
            raise _kind_error(op.describe(position), problem, "an ndarray")
        assert isinstance(checked, np.ndarray)
        array = checked
    if shape is None:
        return array
    reduced = reduce_to_shape(array, shape)
    if reduced is None:
        raise _shape_error(op.describe(position), array.shape, shape)
    return reduced


def _tensor_gradient(value: torch.Tensor, input: torch.Tensor, where: Where) -> torch.Tensor:
    if not differentiable(value.dtype):
        raise _kind_error(where, f"a tensor of dtype {value.dtype}", "a floating tensor")
    if value.is_complex() and not input.is_complex():
        value = value.real  # a real input's gradient: torch's convention takes this part
    if input.layout is not _STRIDED:
        if value.layout is _STRIDED:
            value = value.sparse_mask(input.coalesce() if input.is_sparse else input)
        return value.to(device=input.device, dtype=input.dtype)
    if value.shape != input.shape:
        axes = reduction_axes(tuple(value.shape), tuple(input.shape))
        if axes is None:
            raise _shape_error(where, tuple(value.shape), tuple(input.shape))
        value = (value.sum(dim=axes) if axes else value).reshape(input.shape)
    if value.dtype != input.dtype or value.device != input.device:
        value = value.to(device=input.device, dtype=input.dtype)
    return _laid_out_like(value, input)


def _laid_out_like(gradient: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    # What DDP's buckets and AccumulateGrad expect of a parameter's gradient; views and
    # batched tensors (vmap, batched gradients) have no layout to match, and cannot be copied
    # into in place.
    if not input.is_leaf or gradient.stride() == input.stride():
        return gradient
    try:
        return torch.empty_like(input).copy_(gradient)
    except RuntimeError:
        return gradient


def _kind_error(where: Where, got: str, expected: str) -> GradientError:
    op, rule, name, position = where
    return GradientError(
        f'npgrad op "{op}": {rule} returned {got} as the gradient for input "{name}" '
        f"(position {position}), expected {expected} shaped like the input; return one (or "
        f"None for no gradient)"
    )


def _shape_error(where: Where, got: tuple[int, ...], shape: tuple[int, ...]) -> GradientError:
    op, rule, name, position = where
    return GradientError(
        f'npgrad op "{op}": {rule} returned a gradient of shape {got} for input "{name}" '
        f"(position {position}) of shape {shape}; return one gradient per input, shaped like "
        f"it (or like a broadcast of it, which is summed down), or None"
    )
