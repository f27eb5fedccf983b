"""Argument checks shared by every lrtools module: one policy, one wording.

The policy, everywhere in lrtools:

- a value of the wrong *type* raises ``TypeError`` (a string where a number is
  expected, a float where a flag is expected, ``True`` where a count is expected);
- a value of the right type but outside its domain raises ``ValueError``
  (a negative rate, ``nan``, a fraction above 1, an unknown name);
- the message names the argument, in backticks, and shows the value received.

Each check returns the value converted to the plain Python type the caller
stores (``float``, ``int``, ``bool``, ``str``), so ``numpy`` scalars and 0-d
arrays never leak into configs.

Example:

>>> check_rate("initial_lr", 0.1)
0.1
>>> check_count("decay_steps", 10.0)
10
>>> check_fraction("pct_start", 1.5)
Traceback (most recent call last):
...
ValueError: `pct_start` must lie in (0, 1], got 1.5.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_count",
    "check_flag",
    "check_fraction",
    "check_non_negative",
    "check_rate",
    "check_real",
]


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as a finite ``float``.

    Raises:
        TypeError: if ``value`` is not a real number (``bool`` and ``numpy.bool_``
            included: a flag is not a number).
        ValueError: if it is ``nan`` or infinite.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if _is_boolean(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


def check_rate(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite learning rate: ``> 0``, or ``>= 0`` with ``allow_zero``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is not finite, or not above (or at) zero.
    """
    value = check_real(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}, got {value}.")
    return value


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as a finite ``float`` ``>= 0`` (a rate, a delta, a tolerance)."""
    return check_rate(name, value, allow_zero=True)


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` ``>= minimum`` (steps, epochs, seeds, trials).

    A float with a whole value (``10.0``) is accepted, as Keras accepts it.

    Raises:
        TypeError: if ``value`` is not a real number (``True`` included).
        ValueError: if it is not whole, or below ``minimum``.
    """
    number = check_real(name, value)
    if number != int(number):
        raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
    if number < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {int(number)}.")
    return int(number)


def check_fraction(
    name: str, value: Any, *, low_open: bool = True, high_open: bool = False
) -> float:
    """Return ``value`` as a ``float`` in the unit interval, its ends open or closed.

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        low_open: whether 0 is excluded (``(0, ...``) or included (``[0, ...``).
        high_open: whether 1 is excluded (``..., 1)``) or included (``..., 1]``).

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it lies outside the interval; the message names the interval.
    """
    value = check_real(name, value)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of the names in ``choices``.

    Raises:
        TypeError: if ``value`` is not a string.
        ValueError: if it is not one of ``choices``; the message lists them.
    """
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {', '.join(choices)}, got {value!r}.")
    if value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}: expected one of {', '.join(choices)}.")
    return value


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real ``bool``.

    ``"False"`` (a true string), ``0``/``1`` and ``numpy.bool_`` are refused, so
    that a flag read from a config file or an array cannot flip silently.

    Raises:
        TypeError: if ``value`` is not a Python ``bool``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value
