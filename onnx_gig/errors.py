"""User-facing errors: each one prints as a single readable line from the CLI; and the whole-number check
every option and argument shares, and the first line of any exception for such a line."""
from __future__ import annotations

from numbers import Integral
from typing import Optional


class GigError(Exception):
    """Base class for errors a user can act on (bad model, bad image, bad option)."""


class UnsupportedOpError(GigError):
    """The graph holds an op on the differentiable path that no rule covers."""


class ModelError(GigError):
    """The model file is missing, corrupt, or not an image classifier we can explain."""


class InputError(GigError):
    """An image, array, baseline or target the user passed cannot be used."""


class SizeRejected(ModelError):
    """A model with dynamic sizes failed on an input's size (a stride it needs, a merge of two branches): that
    image's failure, not the run's."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (``limit`` characters at most), or its type's name when it says nothing."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def whole_number(value: object, name: str, low: int = 1, high: Optional[int] = None) -> int:
    """``value`` as an int when it is a whole number (not a bool, not a float) in low..high; else one
    InputError line naming ``name`` (an option such as ``--steps``, or an argument such as ``top``)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or (high is not None and value > high):
        if high is not None:
            what = f"a whole number from {low} to {high}"
        else:
            what = "a positive whole number" if low == 1 else f"a whole number of at least {low}"
        raise InputError(f"{name} must be {what}, got {value!r}")
    return int(value)
