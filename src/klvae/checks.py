"""Checks of option values, each a one-line KlvaeError naming the option, what it must be and
what it got; every config dataclass validates its own fields with these, once."""
from __future__ import annotations

import math
from typing import Any

from klvae.errors import KlvaeError
from klvae.registry import Registry


def positive_int(owner: Any, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KlvaeError(f"{name} must be a positive integer; got {value!r}")


def int_at_least(owner: Any, least: int, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise KlvaeError(f"{name} must be at least {least} (an integer); got {value!r}")


def non_negative_int(owner: Any, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise KlvaeError(f"{name} must be a non-negative integer; got {value!r}")


def number(owner: Any, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise KlvaeError(f"{name} must be a finite number; got {value!r}")


def within(owner: Any, name: str, low: float, high: float, closed: str = "()") -> None:
    """``name`` is a finite number in the interval low..high; ``closed`` gives its brackets."""
    number(owner, name)
    value = getattr(owner, name)
    ok = (value >= low if closed[0] == "[" else value > low) and (value <= high if closed[1] == "]" else value < high)
    if not ok:
        raise KlvaeError(f"{name} must be in {closed[0]}{low:g}, {high:g}{closed[1]}; got {value}")


def boolean(owner: Any, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(owner, name), bool):
            raise KlvaeError(f"{name} must be true or false; got {getattr(owner, name)!r}")


def int_list(owner: Any, name: str, what: str, allow_empty: bool = False, least: int = 1) -> None:
    """``name`` is a list of integers >= ``least``; ``what`` says what they are, with an example."""
    value = getattr(owner, name)
    if not isinstance(value, list) or (not value and not allow_empty) or any(
        not isinstance(v, int) or isinstance(v, bool) or v < least for v in value
    ):
        raise KlvaeError(f"{name} must be a list of {what}; got {value!r}")


def choice(owner: Any, name: str, allowed: Registry | tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """``name`` is a registered entry of ``allowed`` (or one of ``extra``, e.g. "auto")."""
    value = getattr(owner, name)
    if value in extra:
        return
    if isinstance(allowed, Registry):
        if value not in allowed:
            raise KlvaeError(allowed.unknown(value, tuple(e for e in extra if e != "custom")))
        return
    if value not in allowed:
        from klvae.registry import did_you_mean

        raise KlvaeError(f"{name} must be one of {', '.join((*extra, *allowed))}; got {value!r}{did_you_mean(str(value), allowed)}")


def declared_choices(owner: Any) -> None:
    """Every field of a config dataclass whose metadata names its ``registry`` or ``choices`` holds
    one of them (or of its ``extra``, or "custom" where the field's ``custom`` says a part may come
    from Python): the choices are declared once, beside the field."""
    from dataclasses import fields

    for f in fields(owner):
        allowed = f.metadata.get("registry") or f.metadata.get("choices")
        if allowed is not None:
            choice(owner, f.name, allowed, (*f.metadata.get("extra", ()), *(("custom",) if f.metadata.get("custom") else ())))


def doc(text: str, **metadata: Any) -> dict:
    """Field metadata of an option: its one-line help (what ``--help`` shows) and, optionally,
    ``registry`` (a Registry whose names are the choices), ``choices`` (a tuple), ``extra``
    (choices beside a registry's, e.g. "auto"), ``custom`` (a module passed from Python may stand
    in: the value "custom"), ``internal`` (set by the library, not a flag)."""
    return {"help": text, **metadata}
