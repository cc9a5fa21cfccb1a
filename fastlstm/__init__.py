"""fastlstm: Keras-compatible recurrent text classifiers (LSTM, GRU, SimpleRNN), trained fast
on the CPU.

The forward and backward through time run in C++ (``fastlstm._core``); the rest is
thin numpy. The API follows Keras: ``datasets.reuters``/``imdb``, ``utils``, ``preprocessing``,
``layers``, ``Sequential``, ``losses``, ``metrics``, ``optimizers``, ``callbacks``. See README.md.
"""
from fastlstm import callbacks, datasets, layers, losses, metrics, optimizers, preprocessing, utils
from fastlstm._core import get_num_threads, set_num_threads
from fastlstm.models import History, Sequential
from fastlstm.train import TrainResult, reuters_model, train_reuters

__all__ = ["callbacks", "datasets", "layers", "losses", "metrics", "optimizers", "preprocessing", "utils",
           "get_num_threads",
           "set_num_threads", "History", "Sequential", "TrainResult", "reuters_model", "train_reuters"]
__version__ = "0.1.0"
