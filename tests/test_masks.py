"""Masks (Embedding(mask_zero=True), Masking, a mask passed to a layer) on every cell, with
Keras's semantics: a masked step keeps the state; a returned sequence holds the previous
output there, or zeros with zero_output_for_mask. Pre-padding, post-padding, holes, fully
masked rows; forward and every gradient against float64 PyTorch autograd (torch_rnn.py),
training against Keras 3 (torch backend)."""
import numpy as np
import pytest

import torch_rnn
import fastlstm
from test_protocol import assert_same_training
from fastlstm import Sequential
from fastlstm.layers import GRU, LSTM, Dense, Embedding, Masking, SimpleRNN
from fastlstm.preprocessing import to_categorical

LAYERS = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}


def mask_patterns(T=9):
    """Rows (T steps): pre-padded by 0..3, post-padded, holes, fully masked, all real."""
    rows = []
    for k in range(4):
        rows.append([False] * k + [True] * (T - k))
    rows.append([True] * 5 + [False] * (T - 5))           # post-padding
    rows.append([False, True, True, False, False, True, False, True, False][:T])  # holes
    rows.append([False] * T)                               # fully masked
    rows.append([False] * 2 + [True] * 3 + [False] * (T - 5))  # both ends
    return np.array(rows)


def built(cell, H, E, **kw):
    layer = LAYERS[cell](H, **kw)
    layer.build((None, None, E))
    if layer.use_bias:  # non-zero biases: every bias path exercised
        layer.bias[...] = np.random.default_rng(3).normal(scale=0.3, size=layer.bias.shape)
    return layer


def check_against_reference(rng, layer, cell, x_in, x, mask, E, H, tol=3e-6):
    """The layer on x_in (an array or Embedding output) with mask, against the reference on
    x (B,T,E): sequence, last output, states and every gradient of a loss on all of them."""
    B, T = mask.shape
    outs = layer.call(x_in, training=True, mask=mask)
    seq, states = outs[0], outs[1:]
    upstream = {"seq": rng.normal(size=(B, T, H)), "h": rng.normal(size=(B, H))}
    if cell == "lstm":
        upstream["c"] = rng.normal(size=(B, H))
    opts = dict(mask=mask, go_backwards=layer.go_backwards, zero_output_for_mask=layer.zero_output_for_mask)
    w_seq, w_last, w_states, dx, dw = torch_rnn.gradients(cell, x, [layer.kernel, layer.recurrent_kernel, layer.bias],
                                                          upstream, **opts)
    np.testing.assert_allclose(seq, w_seq, atol=tol)
    for got, want in zip(states, w_states):
        np.testing.assert_allclose(got, want, atol=tol)
    d = [upstream["seq"], upstream["h"]] + ([upstream["c"]] if cell == "lstm" else [])
    d_in, grads = layer.backward([a.astype(np.float32) for a in d])
    for got, want in zip(grads, dw):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    return d_in, dx


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_masked_dense_input_matches_reference(rng, cell, go_backwards, zero_output):
    E, H = 3, 5
    mask = mask_patterns()
    x = rng.normal(size=mask.shape + (E,)).astype(np.float32)
    layer = built(cell, H, E, return_sequences=True, return_state=True, go_backwards=go_backwards,
                  zero_output_for_mask=zero_output)
    d_in, dx = check_against_reference(rng, layer, cell, x, x, mask, E, H)
    np.testing.assert_allclose(d_in, dx, rtol=1e-4, atol=2e-5)
    assert np.all(d_in[~mask] == 0)  # a masked step reads nothing of its input


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_mask_zero_token_input_matches_reference(rng, cell, go_backwards):
    """Embedding(mask_zero=True) -> cell: the fused token path with the mask ids != 0."""
    V, E, H = 11, 4, 6
    mask = mask_patterns()
    ids = np.where(mask, rng.integers(1, V, size=mask.shape), 0)
    emb = Embedding(V, E, mask_zero=True)
    emb.build()
    np.testing.assert_array_equal(emb.compute_mask(ids), mask)
    layer = built(cell, H, E, return_sequences=True, return_state=True, go_backwards=go_backwards)
    d_in, dx = check_against_reference(rng, layer, cell, emb.call(ids, training=True), emb.embeddings[ids],
                                       emb.compute_mask(ids), E, H)
    (d_emb,) = emb.backward(d_in)[1]
    want = np.zeros((V, E))
    np.add.at(want, ids.reshape(-1), dx.reshape(-1, E))
    np.testing.assert_allclose(d_emb, want, rtol=1e-4, atol=2e-5)
    assert np.all(d_emb[0] == 0)  # padding is never read


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("zero_output", [False, True])
def test_last_output_under_a_mask(rng, cell, zero_output):
    """return_sequences=False: Keras's last output is the last step's (masked: the previous
    output, or zero with zero_output_for_mask), while the state is the last real step's."""
    E, H = 3, 4
    mask = mask_patterns()
    x = rng.normal(size=mask.shape + (E,)).astype(np.float32)
    layer = built(cell, H, E, zero_output_for_mask=zero_output)
    out = layer.call(x, training=True, mask=mask)
    dl = rng.normal(size=out.shape)
    w_seq, w_last, _, _, dw = torch_rnn.gradients(cell, x, [layer.kernel, layer.recurrent_kernel, layer.bias],
                                                  {"last": dl}, mask=mask, zero_output_for_mask=zero_output)
    np.testing.assert_allclose(out, w_last, atol=3e-6)
    if zero_output:
        assert np.all(out[~mask[:, -1]] == 0)
    _, grads = layer.backward(dl.astype(np.float32))
    for got, want in zip(grads, dw):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_a_full_mask_is_the_unmasked_layer_and_compute_mask_follows_keras(rng):
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    layer = built("gru", 4, 2, return_sequences=True)
    np.testing.assert_allclose(layer(x, mask=np.ones((3, 5), bool)), layer(x), atol=1e-7)
    m = rng.random((3, 5)) > 0.5
    assert layer.compute_mask(x, m) is m
    assert built("gru", 4, 2).compute_mask(x, m) is None
    assert built("lstm", 4, 2, return_state=True).compute_mask(x, m) == [None, None, None]
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, timesteps\) = \(3, 5\)"):
        layer(x, mask=np.ones((3, 4), bool))


def test_masking_layer(rng):
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    x[0, :2] = 0.0
    x[2, 4:] = 0.0
    x[1, 3, 1] = 0.0  # one zero feature does not mask the step
    m = Masking()
    out = m(x)
    mask = m.compute_mask(x)
    assert mask.shape == (4, 6) and not mask[0, :2].any() and not mask[2, 4:].any() and mask[1].all()
    np.testing.assert_array_equal(out, x)
    x2 = x.copy()
    x2[3, 1] = -1.0
    m1 = Masking(mask_value=-1.0)
    np.testing.assert_array_equal(m1(x2)[3, 1], 0.0)
    assert not m1.compute_mask(x2)[3, 1]
    m1.call(x2, training=True)
    d, grads = m1.backward(np.ones_like(x2))
    assert grads == [] and np.all(d[3, 1] == 0) and np.all(d[0] == 1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_masked_training_is_bitwise_the_same_for_any_thread_count(rng, threads, cell):
    B, T, V = 70, 12, 40
    ids = rng.integers(1, V, size=(B, T))
    ids[::3, :5] = 0   # pre-padding
    ids[1::3, 7:] = 0  # post-padding
    ids[5, 4] = 0      # a hole
    y = to_categorical(rng.integers(0, 3, size=B), 3)
    results = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        fastlstm.utils.set_random_seed(5)
        m = Sequential([Embedding(V, 8, mask_zero=True), LAYERS[cell](16, return_sequences=True),
                        LAYERS[cell](16), Dense(3, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        m.fit(ids, y, batch_size=35, epochs=2, verbose=0)
        results.append(m.get_weights() + [m.predict(ids, verbose=0)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.keras
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_mask_zero_models_train_like_keras(rng, padding):
    """Embedding(mask_zero=True) -> LSTM(return_sequences) -> GRU -> Dense, and -> SimpleRNN:
    the mask flows through the stack; Keras's weights give the same predictions and 3 Adam
    steps the same losses and weights."""
    import keras

    x = rng.integers(1, 30, size=(32, 9))
    for b in range(32):  # every length 0..8 of padding
        k = b % 9
        if padding == "pre":
            x[b, :k] = 0
        else:
            x[b, 9 - k:] = 0
    x[3, 4] = 0  # a hole
    y = to_categorical(rng.integers(0, 3, size=32), 3)
    for ks, fs in [([keras.layers.LSTM(5, return_sequences=True), keras.layers.GRU(4)],
                    [LSTM(5, return_sequences=True), GRU(4)]),
                   ([keras.layers.SimpleRNN(5, go_backwards=True)], [SimpleRNN(5, go_backwards=True)])]:
        km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6, mask_zero=True)]
                              + ks + [keras.layers.Dense(3, activation="softmax")])
        km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
        m = Sequential([Embedding(30, 6, mask_zero=True)] + fs + [Dense(3, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        assert_same_training(m, km, x, y)


@pytest.mark.keras
def test_masking_layer_model_trains_like_keras(rng):
    import keras

    x = rng.normal(size=(16, 7, 3)).astype(np.float32)
    for b in range(16):
        x[b, : b % 4] = 0.0
        x[b, 7 - b % 3:] = 0.0
    y = to_categorical(rng.integers(0, 2, size=16), 2)
    km = keras.Sequential([keras.Input(shape=(7, 3)), keras.layers.Masking(), keras.layers.GRU(4, return_sequences=True),
                           keras.layers.LSTM(3), keras.layers.Dense(2, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Masking(input_shape=(7, 3)), GRU(4, return_sequences=True), LSTM(3), Dense(2, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    assert_same_training(m, km, x, y)
