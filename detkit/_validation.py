"""Argument checks shared by every layer (ops, models, data, engine import this; it imports
nothing from detkit)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def choice_problem(name: str, value: object, choices: Sequence[object]) -> str | None:
    """``"NAME must be 'a', 'b' or 'c', got VALUE"`` unless ``value`` is one of ``choices``
    (then None): the one wording of a bad choice, for checks that gather several problems."""
    if value in choices:
        return None
    quoted = [repr(c) for c in choices]
    listed = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
    return f"{name} must be {listed}, got {value!r}"


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` with :func:`choice_problem`'s message unless ``value`` is one of
    ``choices``."""
    problem = choice_problem(name, value, choices)
    if problem is not None:
        raise ValueError(problem)


def weights_file(weights: str | None) -> Path | None:
    """The local file a ``backbone_weights`` (or ``init.checkpoint``) setting names (``~``
    expanded), or None for no weights or a torchvision weights name: the one reading of the
    setting that the model loads and the run key hashes."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    return path if path.is_file() else None
