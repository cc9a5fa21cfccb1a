"""fastlstm: Keras-compatible LSTM text classifiers, trained fast on the CPU.

The LSTM forward and backward through time run in C++ (``fastlstm._core``); the rest is
thin numpy. See README.md.
"""
from fastlstm._core import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "set_num_threads"]
__version__ = "0.1.0"
