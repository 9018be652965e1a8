"""Command-line flags from a benchmark's config dataclass, for ``tools/benchmark_*.py``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any


def parse_bool(text: str) -> bool:
    """``true``/``false`` (any case) for a bool flag (``bool("false")`` would be True)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field-name`` flag per field of the dataclass ``config_cls``, typed and defaulted
    by the field's default (so fields must have bool, int, float or str defaults)."""
    for field in dataclasses.fields(config_cls):
        kind = parse_bool if isinstance(field.default, bool) else type(field.default)
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind,
                            default=field.default)


def config_parser(description: str | None, config_cls: type, *,
                  json_help: str | None = None) -> argparse.ArgumentParser:
    """A benchmark tool's parser: its module docstring as the help text (layout kept), one flag
    per field of ``config_cls`` (:func:`add_config_arguments`), and ``--json PATH`` when
    ``json_help`` is given. Errors are one line through the tool's ``run_tool``."""
    from detkit.engine.errors import ToolArgumentParser  # light: no torch, no Lightning

    parser = ToolArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, config_cls)
    if json_help:
        parser.add_argument("--json", help=json_help)
    return parser


def config_from_arguments(config_cls: type, args: dict[str, Any]) -> Any:
    """The ``config_cls`` instance from the parsed flags; removes its fields from ``args``."""
    return config_cls(**{f.name: args.pop(f.name) for f in dataclasses.fields(config_cls)})


def write_json(path: str | None, payload: Any) -> None:
    """``--json PATH``: write ``payload`` there (nothing without a path)."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
