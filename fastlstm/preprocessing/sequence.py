"""`keras.preprocessing.sequence` (Keras 2's spelling of `keras.utils.pad_sequences`)."""
from fastlstm.utils.sequence_utils import pad_sequences

__all__ = ["pad_sequences"]
