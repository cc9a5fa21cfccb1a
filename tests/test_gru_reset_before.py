"""GRU(reset_after=False): the candidate reads (r * h_prev) @ recurrent_kernel (a second
product per step, after the reset gate), one (3H,) bias; with every option, against float64
PyTorch autograd, and training against Keras 3 (torch backend)."""
import numpy as np
import pytest

import torch_rnn
from fastlstm import Sequential
from fastlstm.layers import GRU, Bidirectional, Dense, Embedding
from fastlstm.preprocessing import to_categorical
from test_protocol import assert_same_training

OPTIONS = [dict(), dict(go_backwards=True), dict(recurrent_activation="hard_sigmoid", activation="relu"),
           dict(recurrent_dropout=0.3), dict(dropout=0.2, recurrent_dropout=0.3), dict(use_bias=False)]


@pytest.mark.parametrize("opt", range(len(OPTIONS)))
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_reference(rng, monkeypatch, opt, tokens, masked):
    kw = OPTIONS[opt]
    B, T, V, E, H = 6, 7, 13, 4, 5
    layer = GRU(H, reset_after=False, return_sequences=True, return_state=True, **kw)
    layer.build((None, None, E))
    assert layer.weights[-1].shape == ((3 * H,) if layer.use_bias else (H, 3 * H))
    if layer.use_bias:
        layer.bias[...] = rng.normal(scale=0.3, size=layer.bias.shape)
    x_m, h_m = layer._dropout_masks(B, E)
    monkeypatch.setattr(layer, "_dropout_masks", lambda B_, E_: (x_m, h_m))
    ids = rng.integers(1, V, size=(B, T))
    ids[:2, :3] = 0
    ids[2, 5:] = 0
    ids[3, 2] = 0
    emb = Embedding(V, E, mask_zero=masked)
    emb.build()
    mask = emb.compute_mask(ids)
    x = emb.embeddings[ids]
    outs = layer.call(emb.call(ids, training=True) if tokens else x, training=True, mask=mask)
    up = {"seq": rng.normal(size=(B, T, H)), "h": rng.normal(size=(B, H))}
    seq, _, states, dx, dw = torch_rnn.gradients(
        "gru_reset_before", x, [layer.kernel, layer.recurrent_kernel, layer.bias], up, mask=mask,
        go_backwards=layer.go_backwards, x_masks=x_m, h_masks=h_m, activation=layer.activation,
        recurrent_activation=layer.recurrent_activation)
    np.testing.assert_allclose(outs[0], seq, atol=3e-6)
    np.testing.assert_allclose(outs[1], states[0], atol=3e-6)
    d_in, grads = layer.backward([up["seq"], up["h"]])
    torch_rnn.assert_gradients(grads, dw, d_in, dx, *((emb, ids) if tokens else ()))


def test_config_and_weights():
    g = GRU(4, reset_after=False)
    g.build((None, None, 3))
    assert [w.shape for w in g.weights] == [(3, 12), (4, 12), (12,)]
    assert GRU.from_config(g.get_config()).reset_after is False
    assert Bidirectional(g).backward_layer.reset_after is False


@pytest.mark.keras
@pytest.mark.parametrize("mask_zero", [False, True])
def test_trains_like_keras(rng, mask_zero):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6, mask_zero=mask_zero),
                           keras.layers.GRU(5, reset_after=False, return_sequences=True),
                           keras.layers.Bidirectional(keras.layers.GRU(4, reset_after=False)),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6, mask_zero=mask_zero), GRU(5, reset_after=False, return_sequences=True),
                    Bidirectional(GRU(4, reset_after=False)), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(1, 30, size=(32, 9))
    for b in range(32):
        x[b, : b % 5] = 0
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))
