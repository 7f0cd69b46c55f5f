"""Pixel-reweighted Adversarial Training (PART) as a reproducible pipeline."""

__version__ = "0.1.0"
