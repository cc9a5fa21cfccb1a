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


def assert_same_training(m, km, x, y):
    """From Keras's weights: the same predictions (3e-6), then over 3 Adam steps the same
    losses (1e-5) and weights (2e-5)."""
    m.set_weights(km.get_weights())
    np.testing.assert_allclose(m.predict(x), km.predict(x, verbose=0), atol=3e-6)
    for step in range(3):
        assert abs(km.train_on_batch(x, y) - m.train_on_batch(x, y)) <= 1e-5
    for got, want in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-5)


def assert_trains_like_keras(rng, m, km, padding):
    """assert_same_training on pre-padded token data (30 tokens, 3 classes)."""
    x = rng.integers(1, 30, size=(32, 9))
    x[:, :padding] = 0
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))


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
    assert_trains_like_keras(rng, m, km, padding=3)


@pytest.mark.parametrize("tokens", [False, True])
def test_return_state_and_go_backwards_gradients_match_numpy(rng, tokens):
    """[output, h, c] of a go_backwards LSTM and the gradients of a loss on all three,
    against the float64 reference run on the reversed input."""
    B, T, V, E, H = 5, 7, 11, 4, 3
    ids = rng.integers(0, V, size=(B, T))
    ids[:2, :3] = 0
    emb = Embedding(V, E)
    emb.build()
    lstm = LSTM(H, return_sequences=True, return_state=True, go_backwards=True)
    lstm.build((None, None, E))
    x = emb.embeddings[ids]
    inputs = emb.call(ids, training=True) if tokens else x
    seq, h, c = lstm.call(inputs, training=True)
    want_seq, cache = ref.lstm_forward(x[:, ::-1], lstm.kernel, lstm.recurrent_kernel, lstm.bias)
    np.testing.assert_allclose(seq, want_seq, atol=2e-6)
    np.testing.assert_allclose(h, want_seq[:, -1], atol=2e-6)
    np.testing.assert_allclose(c, cache[4][-1], atol=2e-6)
    d_seq, d_h, d_c = (rng.normal(size=a.shape).astype(np.float32) for a in (seq, h, c))
    d_in, grads = lstm.backward([d_seq, d_h, d_c])
    dx, dk, dr, db, _ = ref.lstm_backward(cache, d_h, d_seq, d_c)
    for got, want in zip(grads, (dk, dr, db)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if tokens:
        (d_emb,) = emb.backward(d_in)[1]
        want_emb = np.zeros((V, E))
        np.add.at(want_emb, ids.reshape(-1), dx[:, ::-1].reshape(-1, E))
        np.testing.assert_allclose(d_emb, want_emb, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(d_in, dx[:, ::-1], rtol=1e-4, atol=1e-5)
    _, (dk_none, _, _) = lstm.backward([None, None, d_c])  # only the cell state has a gradient
    np.testing.assert_allclose(dk_none, ref.lstm_backward(cache, np.zeros((B, H)), None, d_c)[1],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="return_state"):
        Sequential([Embedding(V, E), LSTM(H, return_state=True)])


@pytest.mark.keras
def test_go_backwards_and_return_state_match_keras(rng):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5, go_backwards=True), keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), LSTM(5, go_backwards=True), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    assert_trains_like_keras(rng, m, km, padding=4)
    xs = rng.normal(size=(4, 6, 3)).astype(np.float32)
    kl = keras.layers.LSTM(5, return_sequences=True, return_state=True, go_backwards=True)
    want = [keras.ops.convert_to_numpy(t) for t in kl(xs)]
    fl = LSTM(5, return_sequences=True, return_state=True, go_backwards=True)
    fl.build((None, None, 3))
    for w, k in zip(fl.weights, kl.get_weights()):
        w[...] = k
    for got, w in zip(fl(xs), want):
        np.testing.assert_allclose(got, w, atol=3e-6)


def test_wrong_gradients_and_failed_adds_are_clear_errors(rng):
    lstm = LSTM(3)
    lstm.build((None, None, 2))
    lstm.call(rng.normal(size=(4, 5, 2)).astype(np.float32), training=True)
    for bad in (np.ones((1, 3)), np.ones(3), np.ones((4, 5, 3))):  # would broadcast
        with pytest.raises(ValueError, match=r"must have shape \(4, 3\)"):
            lstm.backward(bad)
    states = LSTM(3, return_state=True, return_sequences=True)
    states.build((None, None, 2))
    states.call(rng.normal(size=(2, 5, 2)).astype(np.float32), training=True)
    with pytest.raises(ValueError, match=r"takes \[d output, d h, d c\]"):
        states.backward(np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"state c must have shape \(2, 3\)"):
        states.backward([None, None, np.ones((3,))])
    m = Sequential([Embedding(5, 2)])
    with pytest.raises(ValueError, match="return_state"):
        m.add(LSTM(3, return_state=True))
    m.add(LSTM(3))  # the failed add left the model as it was
    assert len(m.layers) == 2 and m.predict(np.zeros((1, 4), np.int32)).shape == (1, 3)


def test_arrays_derived_from_a_softmax_output_carry_no_logits(rng):
    dense = Dense(3, activation="softmax")
    dense.build((None, 4))
    out = dense.call(rng.normal(size=(2, 4)).astype(np.float32))
    assert out.logits.shape == (2, 3)
    for derived in (out[:1], out * 2, out.copy(), np.clip(out, 0, 1)):
        assert getattr(derived, "logits", None) is None
    with pytest.raises(ValueError, match="without a copy"):
        np.asarray(_tokens(), copy=False)


def _tokens():
    emb = Embedding(3, 2)
    emb.build()
    return emb.call(np.zeros((1, 2), np.int32))
