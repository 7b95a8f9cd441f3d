"""Checks on what `Run.log` is given: loss names and the values it can record.

Python floats take no work here. Everything else is turned into a float, except a tensor on an
accelerator, which stays on its device (detached, so no autograd graph is kept alive) until the
flusher copies a whole batch to the host at once: reading it now would wait for the GPU.
"""

from __future__ import annotations

import keyword
import numbers
import re
import sys
from typing import Any

from ..errors import InvalidLossError
from ..runformat import RESERVED_COLUMNS

MAX_NAME_LENGTH = 64
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_loss_name(name: object) -> str:
    """A loss name becomes a Parquet column and part of file names: plain ASCII identifiers only."""
    if not isinstance(name, str) or not _PLAIN_IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise InvalidLossError(
            f"loss name {name!r} is not a plain identifier (letters, digits, underscores)",
            key=str(name),
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidLossError(f"loss name {name!r} is longer than {MAX_NAME_LENGTH}", key=name)
    if name in RESERVED_COLUMNS:
        raise InvalidLossError(f"loss name {name!r} is reserved by the shard format", key=name)
    return name


def check_step(step: object) -> int:
    """The step as an int64-range Python int."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidLossError(f"step must be an integer, got {type(step).__name__}", key="step")
    value = int(step)
    if not -(2**63) <= value < 2**63:
        raise InvalidLossError(f"step {value} does not fit in int64", key="step", value=value)
    return value


class _NoTensorYet:
    """Stands in for torch.Tensor until a tensor is logged, so the fast path needs no import."""


_Tensor: Any = _NoTensorYet


class DeviceTensors:
    """A one-way latch: has this process logged a tensor that lives on an accelerator?

    Until it has, flushers skip looking for device tensors in their rows.
    """

    logged = False


def coerce_loss_value(key: str, value: Any) -> Any:
    """A float for numbers and host tensors; a detached 0-d tensor for device tensors.

    Ordered for speed: this runs for every non-float loss of every step.
    """
    global _Tensor
    if type(value) is _Tensor and value.is_cpu:
        number = value.tolist()  # unlike .item(), keeps the GIL: no wait behind the flusher
        return number if type(number) is float else _host_tensor_number(key, number, value)
    if type(value) is int:
        return _int_to_float(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if type(value) is torch.Tensor:
            _Tensor = torch.Tensor
        if not value.is_cpu:
            return _device_tensor(key, value, torch)
        number = value.tolist()
        return number if type(number) is float else _host_tensor_number(key, number, value)
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # 0-d NumPy array
        return _checked_number(key, value.item(), value)
    return _checked_number(key, value, value)


def _host_tensor_number(key: str, number: Any, tensor: Any) -> float:
    if isinstance(number, list):
        if tensor.numel() != 1:
            raise _not_a_scalar(key, tensor)
        number = tensor.reshape(()).tolist()
    return _checked_number(key, number, tensor)


def _checked_number(key: str, number: Any, original: Any) -> float:
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise InvalidLossError(
            f"loss {key!r} must be a real number or a 0-d tensor, got {type(original).__name__}"
            + (f" of dtype {original.dtype}" if hasattr(original, "dtype") else ""),
            key=key,
            value=original,
        )
    if isinstance(number, numbers.Integral):
        return _int_to_float(int(number))
    return float(number)


def _int_to_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:  # an int beyond float64's range
        return float("inf") if number > 0 else float("-inf")


def _device_tensor(key: str, value: Any, torch: Any) -> Any:
    """Keep an accelerator tensor where it is: detached (so it frees its graph), never read."""
    if value.numel() != 1:
        raise _not_a_scalar(key, value)
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise InvalidLossError(f"loss {key!r} has dtype {value.dtype}, not a real number", key=key)
    DeviceTensors.logged = True
    value = value.detach()
    return value if value.dim() == 0 else value.reshape(())


def _not_a_scalar(key: str, value: Any) -> InvalidLossError:
    return InvalidLossError(
        f"loss {key!r} must be a 0-d tensor, got shape {tuple(value.shape)}", key=key, value=value
    )
