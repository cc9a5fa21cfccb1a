"""activation (tanh, relu, linear/None) and recurrent_activation (sigmoid, hard_sigmoid,
Keras 3's relu6(x + 3) / 6) on every cell: forward and every gradient against float64
PyTorch autograd, training against Keras 3 (torch backend)."""
import numpy as np
import pytest

import torch_rnn
from fastlstm import Sequential
from fastlstm.layers import GRU, LSTM, Dense, Embedding, SimpleRNN
from fastlstm.preprocessing import to_categorical
from test_protocol import assert_same_training

LAYERS = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}
# (cell, activation, recurrent_activation); SimpleRNN has no gates, so no recurrent_activation
COMBOS = [(c, a, r) for c in ("lstm", "gru") for a in ("tanh", "relu", "linear")
          for r in ("sigmoid", "hard_sigmoid")] + [("simple_rnn", a, "sigmoid") for a in ("tanh", "relu", "linear")]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c))
@pytest.mark.parametrize("tokens", [False, True])
def test_activations_match_reference(rng, combo, tokens):
    cell, activation, rec = combo
    kw = {} if cell == "simple_rnn" else {"recurrent_activation": rec}
    B, T, V, E, H = 5, 7, 13, 4, 6
    layer = LAYERS[cell](H, activation=activation, return_sequences=True, return_state=True, **kw)
    layer.build((None, None, E))
    # weights large enough that hard_sigmoid saturates and relu cuts on some units
    layer.kernel[...] = rng.normal(scale=1.5, size=layer.kernel.shape)
    layer.recurrent_kernel[...] = rng.normal(scale=0.4, size=layer.recurrent_kernel.shape)
    layer.bias[...] = rng.normal(scale=0.5, size=layer.bias.shape)
    ids = rng.integers(1, V, size=(B, T))
    ids[:2, :3] = 0
    emb = Embedding(V, E, embeddings_initializer=lambda s: rng.normal(size=s))
    emb.build()
    x = emb.embeddings[ids]
    z = x @ layer.kernel + (layer.bias[0] if cell == "gru" else layer.bias)
    assert (z > 3).any() and (z < -3).any()  # hard_sigmoid saturates, relu cuts somewhere
    outs = layer.call(emb.call(ids, training=True) if tokens else x, training=True)
    up = {"seq": rng.normal(size=(B, T, H)), "h": rng.normal(size=(B, H))}
    if cell == "lstm":
        up["c"] = rng.normal(size=(B, H))
    opts = dict(activation=activation, recurrent_activation=rec)
    seq, _, states, dx, dw = torch_rnn.gradients(cell, x, [layer.kernel, layer.recurrent_kernel, layer.bias], up, **opts)
    scale = max(1.0, np.abs(seq).max())  # linear/relu outputs grow
    np.testing.assert_allclose(outs[0], seq, atol=3e-6 * scale)
    for got, want in zip(outs[1:], states):
        np.testing.assert_allclose(got, want, atol=3e-6 * scale)
    d_in, grads = layer.backward([up["seq"], up["h"]] + ([up["c"]] if cell == "lstm" else []))
    for got, want in zip(grads, dw):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(want).max()))


def test_activation_none_is_linear_and_config_round_trips():
    layer = SimpleRNN(3, activation=None)
    assert layer.activation == "linear"
    again = LSTM.from_config(LSTM(4, activation="relu", recurrent_activation="hard_sigmoid").get_config())
    assert (again.activation, again.recurrent_activation) == ("relu", "hard_sigmoid")


@pytest.mark.keras
def test_activation_models_train_like_keras(rng):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5, activation="relu", recurrent_activation="hard_sigmoid",
                                             return_sequences=True),
                           keras.layers.GRU(4, recurrent_activation="hard_sigmoid", return_sequences=True),
                           keras.layers.SimpleRNN(4, activation="relu"),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), LSTM(5, activation="relu", recurrent_activation="hard_sigmoid",
                                           return_sequences=True),
                    GRU(4, recurrent_activation="hard_sigmoid", return_sequences=True),
                    SimpleRNN(4, activation="relu"), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(1, 30, size=(32, 9))
    x[:, :3] = 0
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))
