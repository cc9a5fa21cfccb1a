"""Bidirectional: forward and backward directions in the engine, merged as Keras does,
against float64 PyTorch autograd (torch_rnn.py) and Keras 3 (torch backend)."""
import numpy as np
import pytest

import torch_rnn
from fastlstm import Sequential
from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Embedding, SimpleRNN
from fastlstm.preprocessing import to_categorical
from test_protocol import assert_same_training

LAYERS = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}


def merge_reference(mode, y, y_rev):
    return {"concat": lambda: np.concatenate([y, y_rev], -1), "sum": lambda: y + y_rev,
            "ave": lambda: (y + y_rev) / 2, "mul": lambda: y * y_rev}[mode]()


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_matches_reference(rng, cell, merge_mode, masked):
    """Outputs and every gradient of sum(output * w) (return_sequences), with or without a
    mask (post-padding, holes, a fully masked row), against the two reference directions."""
    B, T, V, E, H = 6, 7, 13, 3, 4
    ids = rng.integers(1, V, size=(B, T))
    if masked:
        ids[0, 4:] = 0
        ids[1, :2] = 0
        ids[2, 3] = 0
        ids[3] = 0
    emb = Embedding(V, E, mask_zero=masked)
    emb.build()
    bi = Bidirectional(LAYERS[cell](H, return_sequences=True), merge_mode=merge_mode)
    bi.build((None, None, E))
    assert [w.shape for w in bi.weights] == [w.shape for w in bi.forward_layer.weights] * 2
    mask = emb.compute_mask(ids)
    out = bi.call(emb.call(ids, training=True), training=True, mask=mask)
    x = emb.embeddings[ids]
    w = rng.normal(size=out.shape)
    fwd, bwd = bi.forward_layer, bi.backward_layer
    zero = mask is not None  # Bidirectional zeroes masked outputs of returned sequences
    wf = [fwd.kernel, fwd.recurrent_kernel, fwd.bias]
    wb = [bwd.kernel, bwd.recurrent_kernel, bwd.bias]
    y = torch_rnn.outputs(cell, x, wf, mask=mask, zero_output_for_mask=zero)[0]
    y_rev = torch_rnn.outputs(cell, x, wb, mask=mask, go_backwards=True, zero_output_for_mask=zero)[0][:, ::-1]
    np.testing.assert_allclose(out, merge_reference(merge_mode, y, y_rev), atol=3e-6)
    # dL/dy and dL/dy_rev of L = sum(merge(y, y_rev) * w)
    dy, drev = {"concat": lambda: (w[..., :H], w[..., H:]), "sum": lambda: (w, w),
                "ave": lambda: (w / 2, w / 2), "mul": lambda: (w * y_rev, w * y)}[merge_mode]()
    _, _, _, dxf, dwf = torch_rnn.gradients(cell, x, wf, {"seq": dy}, mask=mask, zero_output_for_mask=zero)
    _, _, _, dxb, dwb = torch_rnn.gradients(cell, x, wb, {"seq": drev[:, ::-1]}, mask=mask, go_backwards=True,
                                            zero_output_for_mask=zero)
    d_in, grads = bi.backward(w.astype(np.float32))
    for got, want in zip(grads, dwf + dwb):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    (d_emb,) = emb.backward(d_in)[1]
    want = np.zeros((V, E))
    np.add.at(want, ids.reshape(-1), (dxf + dxb).reshape(-1, E))
    np.testing.assert_allclose(d_emb, want, rtol=1e-4, atol=2e-5)


def test_bidirectional_states_none_merge_and_errors(rng):
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    bi = Bidirectional(LSTM(4, return_state=True), merge_mode=None)
    outs = bi(x)
    assert len(outs) == 6 and all(o.shape == (3, 4) for o in outs)
    np.testing.assert_array_equal(outs[0], outs[2])  # forward output = forward h
    np.testing.assert_array_equal(outs[1], outs[4])  # backward output = backward h
    assert bi.output_shape((None, 5, 2)) == [(None, 4)] * 6
    bi.call(x, training=True)
    d_in, grads = bi.backward([np.ones((3, 4), np.float32), None, None, None, None, np.ones((3, 4), np.float32)])
    assert d_in.shape == x.shape and len(grads) == 6
    inner = GRU(3, return_sequences=True)
    g = Bidirectional(inner, input_shape=(5, 2))
    assert g.output_shape((None, 5, 2)) == (None, 5, 6) and g.forward_layer.name == "forward_" + inner.name
    assert g.backward_layer.name == "backward_" + inner.name
    assert g.backward_layer.go_backwards and g.backward_layer.zero_output_for_mask
    with pytest.raises(ValueError, match="Invalid merge mode"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="go_backwards"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3))
    with pytest.raises(ValueError, match="return_sequences"):
        Bidirectional(LSTM(3), backward_layer=LSTM(3, go_backwards=True, return_sequences=True))
    with pytest.raises(ValueError, match="recurrent layer"):
        Bidirectional(Dense(3))
    with pytest.raises(ValueError, match="list of 6 gradients"):
        bi.backward(np.ones((3, 4), np.float32))
    custom = Bidirectional(LSTM(3), backward_layer=GRU(2, go_backwards=True))
    assert custom.output_shape((None, 5, 2)) == (None, 5)
    assert custom(x).shape == (3, 5)


@pytest.mark.keras
@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_bidirectional_models_train_like_keras(rng, merge_mode, mask_zero):
    """Embedding -> Bidirectional(LSTM, return_sequences) -> Bidirectional(GRU) -> Dense,
    pre-padded, with and without mask_zero."""
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6, mask_zero=mask_zero),
                           keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), merge_mode=merge_mode),
                           keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode=merge_mode),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6, mask_zero=mask_zero),
                    Bidirectional(LSTM(5, return_sequences=True), merge_mode=merge_mode),
                    Bidirectional(GRU(4), merge_mode=merge_mode), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(1, 30, size=(32, 9))
    for b in range(32):
        x[b, : b % 6] = 0
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))
