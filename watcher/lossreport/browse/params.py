"""Reading a URL's query parameters, each checked: the views take only what these return.

`Params` is what `urllib.parse.parse_qs` gives. Each reader takes one parameter, which may be
given at most once; a bad value raises QueryError naming the parameter, which the server
answers with a 400.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TypeVar

from ..errors import QueryError

Params = dict[str, list[str]]
Choice = TypeVar("Choice", bound=str)


def reject_unknown(params: Params, allowed: Collection[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise QueryError(unknown[0], "is not a parameter of this page")


def one_text(params: Params, name: str, max_length: int) -> str | None:
    """The parameter's value, or None when it is not given."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(name, "is given more than once")
    value = values[0]
    if len(value) > max_length:
        raise QueryError(name, f"is longer than {max_length} characters")
    if not value.isprintable():
        raise QueryError(name, "holds a control character")
    return value


def one_int(params: Params, name: str, low: int, high: int, default: int) -> int:
    text = one_text(params, name, 20)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(name, f"must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise QueryError(name, f"must be {low} to {high}")
    return value


def one_choice(params: Params, name: str, choices: Sequence[Choice], default: Choice) -> Choice:
    text = one_text(params, name, 40)
    if text is None or text == "":
        return default
    for choice in choices:
        if text == choice:
            return choice
    raise QueryError(name, f"must be one of {', '.join(choices)}")


def one_number(params: Params, name: str) -> float | None:
    """A finite number, or None when the parameter is not given."""
    text = one_text(params, name, 40)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise QueryError(name, f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise QueryError(name, "must be a finite number")
    return value
