"""detkit: an object-detection toolkit centred on RoI pooling variants."""

__version__ = "0.1.0"
