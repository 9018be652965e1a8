"""Command-line flags from a benchmark's config dataclass, for ``tools/benchmark_*.py``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field-name`` flag per field of the dataclass ``config_cls``, typed and defaulted
    by the field's default (so fields must have int, float or str defaults)."""
    for field in dataclasses.fields(config_cls):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                            default=field.default)


def config_from_arguments(config_cls: type, args: dict[str, Any]) -> Any:
    """The ``config_cls`` instance from the parsed flags; removes its fields from ``args``."""
    return config_cls(**{f.name: args.pop(f.name) for f in dataclasses.fields(config_cls)})
