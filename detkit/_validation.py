"""Argument checks shared by every layer (ops, models, data, engine import this; it imports
nothing from detkit)."""

from __future__ import annotations

from collections.abc import Sequence


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ``ValueError("NAME must be 'a', 'b' or 'c', got VALUE")`` unless ``value`` is one
    of ``choices``."""
    if value not in choices:
        quoted = [repr(c) for c in choices]
        listed = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
        raise ValueError(f"{name} must be {listed}, got {value!r}")
