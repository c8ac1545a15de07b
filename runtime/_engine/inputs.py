"""Check a request's inputs against the bundle's input specs before any stage runs, so a wrong
name, shape or dtype fails with a message that says what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from ponder._core.errors import PonderError

__all__ = ["InputError", "check_inputs"]


class InputError(PonderError, ValueError):
    """A request does not match what the bundle takes."""


def check_inputs(
    specs: Any, inputs: Any, max_batch: int | None, max_tokens: int | None = None
) -> dict[str, np.ndarray]:
    """Inputs as {name: array}: one array is accepted for a single-input bundle. Every name,
    rank, fixed dimension and dtype must match `specs` (TensorSpec list); the batch must agree
    across inputs; a "tokens" dimension must not exceed `max_tokens` (the bundle's export
    bound). `max_batch` is not enforced here (the engine splits larger batches)."""
    names = [s.name for s in specs]
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise InputError(f"this bundle takes {len(names)} inputs {names}; pass a dict of them")
        inputs = {names[0]: inputs}
    if set(inputs) != set(names):
        raise InputError(
            f"this bundle takes inputs {names}, got {sorted(inputs)}; pass exactly those names"
        )
    out, batch = {}, None
    for spec in specs:
        array = _array(spec, inputs[spec.name])
        _check_shape(spec, array.shape)
        _check_tokens(spec, array.shape, max_tokens)
        if batch is not None and array.shape[0] != batch:
            raise InputError(
                f"inputs disagree on the batch size: {spec.name!r} has {array.shape[0]} rows, "
                f"an earlier input {batch}"
            )
        batch = array.shape[0]
        out[spec.name] = array
    return out


def _array(spec: Any, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype != np.dtype(spec.dtype):
        raise InputError(
            f"input {spec.name!r} has dtype {array.dtype}, the bundle takes {spec.dtype}; "
            f"convert it first (numpy: x.astype(np.{spec.dtype}))"
        )
    return np.ascontiguousarray(array)


def _check_shape(spec: Any, shape: tuple[int, ...]) -> None:
    want = tuple(spec.shape)
    shown = "[" + ", ".join(str(d) for d in want) + "]"
    if len(shape) != len(want):
        raise InputError(
            f"input {spec.name!r} has shape {list(shape)} ({len(shape)} dims), the bundle takes "
            f"{shown}; a single sample needs its batch dimension too (x[None])"
        )
    for i, (got, expected) in enumerate(zip(shape, want, strict=True)):
        if isinstance(expected, int) and got != expected:
            raise InputError(
                f"input {spec.name!r} has shape {list(shape)}, the bundle takes {shown}: "
                f"dimension {i} must be {expected}, not {got}"
            )
    if shape[0] == 0:
        raise InputError(f"input {spec.name!r} has no rows; pass at least one sample")


def _check_tokens(spec: Any, shape: tuple[int, ...], max_tokens: int | None) -> None:
    for got, dim in zip(shape, spec.shape, strict=True):
        if dim == "tokens" and max_tokens is not None and got > max_tokens:
            raise InputError(
                f"input {spec.name!r} has {got} tokens; this bundle was exported for at most "
                f"{max_tokens}. Truncate the text (tokenizer(..., truncation=True, "
                f"max_length={max_tokens})) or re-export with ponder export --max-tokens {got}"
            )
