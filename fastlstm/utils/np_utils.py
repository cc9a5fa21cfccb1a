"""Keras 2's `keras.utils.np_utils` (`from keras.utils import np_utils; np_utils.to_categorical`)."""
from fastlstm.utils.numerical_utils import to_categorical

__all__ = ["to_categorical"]
