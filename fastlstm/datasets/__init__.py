"""Datasets, as `keras.datasets`."""
from fastlstm.datasets import reuters

__all__ = ["reuters"]
