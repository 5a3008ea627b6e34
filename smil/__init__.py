"""SMIL pipeline: predict SMIL body-model parameters from single- and multi-view images."""

__version__ = "0.1.0"
