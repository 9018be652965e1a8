import argparse
from dataclasses import dataclass

import pytest

from detkit.benchmarks.arguments import config_from_arguments, config_parser
from detkit.engine.errors import UsageError


@dataclass(frozen=True)
class Config:
    size: int = 4
    scale: float = 0.5
    name: str = "a"
    workers: bool = True


def test_config_flags_are_typed_and_bools_parse_false():
    parser = config_parser("a benchmark", Config, json_help="also write JSON")
    assert parser.description == "a benchmark"
    args = vars(parser.parse_args(["--size", "8", "--workers", "false", "--json", "x.json"]))
    assert config_from_arguments(Config, args) == Config(size=8, workers=False)
    assert args == {"json": "x.json"}  # the config's fields are taken out
    assert config_from_arguments(Config, vars(parser.parse_args([]))) == Config()
    with pytest.raises(UsageError, match="expected true or false, got 'maybe'"):
        parser.parse_args(["--workers", "maybe"])
    with pytest.raises((UsageError, argparse.ArgumentError), match="invalid int value"):
        parser.parse_args(["--size", "x"])
