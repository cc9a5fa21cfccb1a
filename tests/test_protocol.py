"""The one layer protocol (build / call(inputs, training, mask) / backward): layers called on
arrays, layers composed in any order, against numpy float64 and Keras (torch backend)."""
import numpy as np
import pytest

import numpy_lstm as ref
from fastlstm import Sequential
from fastlstm.layers import LSTM, Dense, Embedding
from fastlstm.preprocessing import to_categorical


def test_layers_are_callable_on_arrays(rng):
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    lstm = LSTM(5, return_sequences=True)
    h = lstm(x)  # built from the input's shape, as in Keras
    want, _ = ref.lstm_forward(x, lstm.kernel, lstm.recurrent_kernel, lstm.bias)
    assert type(h) is np.ndarray and lstm.kernel.shape == (3, 20)
    np.testing.assert_allclose(h, want, atol=2e-6)
    emb = Embedding(10, 3)
    ids = rng.integers(0, 10, size=(4, 7))
    e = emb(ids)
    assert type(e) is np.ndarray
    np.testing.assert_array_equal(e, emb.embeddings[ids])
    dense = Dense(2, activation="softmax")
    p = dense(h[:, -1])
    z = h[:, -1].astype(np.float64) @ dense.kernel + dense.bias
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(1, keepdims=True), atol=1e-6)
    assert type(p) is np.ndarray
    with pytest.raises(ValueError, match="expected ndim=3"):
        LSTM(2)(np.zeros((3, 4)))


def test_an_embedding_read_by_a_non_recurrent_layer_is_gathered(rng):
    m = Sequential([Embedding(12, 4), Dense(3)])
    ids = rng.integers(0, 12, size=(5, 6))
    emb, kernel, bias = m.get_weights()
    np.testing.assert_allclose(m.predict(ids), emb[ids].astype(np.float64) @ kernel + bias, atol=1e-6)


@pytest.mark.keras
def test_stacked_lstms_train_like_keras(rng):
    """Embedding -> LSTM(return_sequences) -> LSTM -> Dense(softmax): the fused first pair,
    the dense-input second LSTM and the sequence gradient between them."""
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5, return_sequences=True), keras.layers.LSTM(4),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), LSTM(5, return_sequences=True), LSTM(4), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.set_weights(km.get_weights())
    x = rng.integers(1, 30, size=(32, 9))
    x[:, :3] = 0
    y = to_categorical(rng.integers(0, 3, size=32), 3)
    np.testing.assert_allclose(m.predict(x), km.predict(x, verbose=0), atol=3e-6)
    for step in range(3):
        assert abs(km.train_on_batch(x, y) - m.train_on_batch(x, y)) <= 1e-5
    for got, want in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-5)
