"""detkit: an object-detection toolkit centred on RoI pooling variants."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # lazy: `import detkit` stays light (no torch, no Lightning) until Detector is used
    if name == "Detector":
        from detkit.engine.predict import Detector

        return Detector
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")
