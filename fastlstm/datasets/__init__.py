"""Datasets, as `keras.datasets`."""
from fastlstm.datasets import imdb, reuters

__all__ = ["imdb", "reuters"]
