"""`train_reuters`: the classic Keras Reuters LSTM example, end to end."""
import dataclasses
import time

from fastlstm import utils
from fastlstm.datasets import reuters
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.models import History, Sequential
from fastlstm.optimizers import Adam
from fastlstm.preprocessing import pad_sequences, to_categorical


@dataclasses.dataclass
class TrainResult:
    history: History
    test_loss: float
    test_accuracy: float
    model: Sequential
    seconds: float  # wall time of fit (all epochs)


def reuters_model(num_words=1000, embedding_dim=100, units=100, num_classes=46):
    """Embedding(num_words, embedding_dim) -> LSTM(units) -> Dense(46, softmax), compiled."""
    model = Sequential([Embedding(num_words, embedding_dim), LSTM(units, activation="tanh"),
                        Dense(num_classes, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=Adam(), metrics=["accuracy"])
    return model


def train_reuters(num_words=1000, maxlen=100, embedding_dim=100, units=100, epochs=20,
                  batch_size=100, seed=None, verbose=1, data_dir=None):
    """Keras's Reuters example: load (test_split 0.2), pad to `maxlen`, one-hot labels,
    fit with validation on the test split, evaluate. Returns a TrainResult.

    `seed` makes initialisation and shuffling repeatable; `data_dir` holds reuters.npz
    (default: $FASTLSTM_DATA_DIR, the Keras cache, fastlstm's cache, or a download).
    """
    if seed is not None:
        utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = reuters.load_data(path=data_dir, num_words=num_words,
                                                             test_split=0.2)
    x_train = pad_sequences(x_train, maxlen=maxlen)
    x_test = pad_sequences(x_test, maxlen=maxlen)
    num_classes = len(reuters.get_label_names())
    y_train = to_categorical(y_train, num_classes)
    y_test = to_categorical(y_test, num_classes)
    model = reuters_model(num_words, embedding_dim, units, num_classes)
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, validation_data=(x_test, y_test), epochs=epochs,
                        batch_size=batch_size, verbose=verbose)
    seconds = time.perf_counter() - t0
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    return TrainResult(history, test_loss, test_accuracy, model, seconds)
