"""detkit.engine: Lightning training and evaluation (module, callbacks, command lines).

The names below load lazily, so that ``detkit.engine.errors`` (every tool's error reporting)
and the other light modules import without Lightning.
"""

from typing import Any

__all__ = [
    "DetectionModule",
    "NonFiniteLossError",
    "OptimizerSettings",
    "ScheduleSettings",
    "lr_factor",
]


def __getattr__(name: str) -> Any:
    if name == "NonFiniteLossError":
        from detkit.engine.errors import NonFiniteLossError

        return NonFiniteLossError
    if name in __all__:
        from detkit.engine import module

        return getattr(module, name)
    raise AttributeError(f"module 'detkit.engine' has no attribute {name!r}")
