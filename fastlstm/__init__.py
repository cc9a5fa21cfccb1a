"""fastlstm: Keras-compatible recurrent text classifiers (LSTM, GRU, SimpleRNN), trained fast
on the CPU.

The forward and backward through time run in C++ (``fastlstm._core``); the rest is
thin numpy. The API follows Keras: ``datasets.reuters``/``imdb``, ``utils``, ``preprocessing``,
``layers``, ``Sequential``, ``losses``, ``metrics``, ``optimizers``, ``callbacks``. See README.md.
"""
from fastlstm import (activations, backend, callbacks, datasets, layers, losses, metrics, optimizers,  # noqa: F401
                      preprocessing, regularizers, utils)
from fastlstm._core import cpu_info, get_num_threads, set_num_threads
from fastlstm.layers import Input
from fastlstm.models import History, Model, Sequential
from fastlstm.train import TrainResult, reuters_model, train_reuters

__all__ = ["activations", "backend", "callbacks", "datasets", "layers", "losses", "metrics", "optimizers",
           "preprocessing", "regularizers", "utils", "cpu_info", "get_num_threads", "set_num_threads", "Input", "History", "Model",
           "Sequential", "TrainResult", "reuters_model", "train_reuters"]
__version__ = "0.1.0"
