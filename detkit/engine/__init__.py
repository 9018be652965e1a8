"""detkit.engine: Lightning training and evaluation (module, callbacks, command lines)."""

from detkit.engine.module import (
    DetectionModule,
    NonFiniteLossError,
    OptimizerSettings,
    ScheduleSettings,
    lr_factor,
)

__all__ = [
    "DetectionModule",
    "NonFiniteLossError",
    "OptimizerSettings",
    "ScheduleSettings",
    "lr_factor",
]
