"""GRU and SimpleRNN on the shared engine: forward, every gradient and the input gradient
against float64 numpy references (themselves checked by central finite differences), on
dense input and fused with an Embedding (leading padding skipped), with return_sequences,
return_state and go_backwards; Keras 3 (torch backend) as the oracle for training."""
import numpy as np
import pytest

import numpy_rnn as ref
import fastlstm
from fastlstm import Sequential, _core
from fastlstm.layers import GRU, Dense, Embedding, SimpleRNN
from fastlstm.preprocessing import to_categorical

LAYERS = {"gru": GRU, "simple_rnn": SimpleRNN}


def built(cell, H, E, **kw):
    layer = LAYERS[cell](H, **kw)
    layer.build((None, None, E))
    rng = np.random.default_rng(7)
    if layer.use_bias:  # non-zero biases, so that every bias path is exercised
        layer.bias[...] = rng.normal(scale=0.3, size=layer.bias.shape)
    return layer


def loss_weights(rng, B, T, H):
    return rng.normal(size=(B, T, H)), rng.normal(size=(B, H))


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_numpy_references_match_finite_differences(rng, cell):
    """The references' gradients against central differences of their own forward (float64)."""
    forward, backward = ref.REFERENCES[cell]
    B, T, E, H = 2, 4, 3, 5
    G = {"gru": 3, "simple_rnn": 1}[cell]
    x = rng.normal(size=(B, T, E))
    params = [rng.normal(scale=0.5, size=(E, G * H)), rng.normal(scale=0.5, size=(H, G * H)),
              rng.normal(scale=0.5, size=(2, 3 * H) if cell == "gru" else (H,))]
    w_seq, w_last = loss_weights(rng, B, T, H)

    def loss(x, k, r, b):
        seq, _ = forward(x, k, r, b)
        return np.sum(seq * w_seq) + np.sum(seq[:, -1] * w_last)

    _, cache = forward(x, *params)
    grads = backward(cache, w_last, w_seq)
    for i, (arg, g) in enumerate(zip([x] + params, grads)):
        num = np.zeros_like(arg)
        for idx in np.ndindex(arg.shape):
            args = [x] + params
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[i][idx] += 1e-6
            minus[i][idx] -= 1e-6
            num[idx] = (loss(*plus) - loss(*minus)) / 2e-6
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


SHAPES = [(5, 7, 4, 3), (1, 1, 2, 17), (3, 9, 5, 33)]  # (B, T, E, H): odd sizes, B = 1, T = 1


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_dense_input_matches_numpy(rng, cell, shape, go_backwards):
    B, T, E, H = shape
    forward, backward = ref.REFERENCES[cell]
    layer = built(cell, H, E, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    seq, h = layer.call(x, training=True)
    xr = x[:, ::-1] if go_backwards else x
    want, cache = forward(xr, layer.kernel, layer.recurrent_kernel, layer.bias)
    np.testing.assert_allclose(seq, want, atol=3e-6)
    np.testing.assert_allclose(h, want[:, -1], atol=3e-6)
    w_seq, w_last = (a.astype(np.float32) for a in loss_weights(rng, B, T, H))
    dx, grads = layer.backward([w_seq, w_last])
    want_dx, *want_grads = backward(cache, w_last, w_seq)
    for got, w in zip(grads, want_grads):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dx, want_dx[:, ::-1] if go_backwards else want_dx, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_token_input_with_padding_matches_numpy(rng, cell, return_sequences):
    """Embedding -> cell with leading padding (rows of every start, all-padding rows): the
    engine skips the padding exactly; the embedding gradient is the reference's."""
    B, T, V, E, H = 9, 8, 13, 4, 6
    forward, backward = ref.REFERENCES[cell]
    ids = rng.integers(1, V, size=(B, T))
    for b in range(B):
        ids[b, :b] = 0  # start b; rows 8.. are all padding
    ids[B - 1] = 0
    emb = Embedding(V, E)
    emb.build()
    layer = built(cell, H, E, return_sequences=return_sequences)
    out = layer.call(emb.call(ids, training=True), training=True)
    x = emb.embeddings[ids]
    want, cache = forward(x, layer.kernel, layer.recurrent_kernel, layer.bias)
    np.testing.assert_allclose(out, want if return_sequences else want[:, -1], atol=3e-6)
    w_seq, w_last = (a.astype(np.float32) for a in loss_weights(rng, B, T, H))
    d_in, grads = layer.backward(w_seq if return_sequences else w_last)
    want_dx, *want_grads = backward(cache, np.zeros((B, H)) if return_sequences else w_last,
                                    w_seq if return_sequences else None)
    for got, w in zip(grads, want_grads):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=2e-5)
    (d_emb,) = emb.backward(d_in)[1]
    want_emb = np.zeros((V, E))
    np.add.at(want_emb, ids.reshape(-1), want_dx.reshape(-1, E))
    np.testing.assert_allclose(d_emb, want_emb, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_without_bias(rng, cell):
    forward, backward = ref.REFERENCES[cell]
    layer = built(cell, 4, 3, use_bias=False)
    assert len(layer.weights) == 2 and layer.bias is None
    x = rng.normal(size=(3, 5, 3)).astype(np.float32)
    want, cache = forward(x, layer.kernel, layer.recurrent_kernel, None)
    np.testing.assert_allclose(layer.call(x, training=True), want[:, -1], atol=3e-6)
    dh = rng.normal(size=(3, 4)).astype(np.float32)
    _, grads = layer.backward(dh)
    assert len(grads) == 2
    for got, w in zip(grads, backward(cache, dh)[1:3]):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_bitwise_the_same_for_any_thread_count(rng, threads, cell):
    B, T, V, E, H = 70, 12, 40, 8, 24
    ids = rng.integers(0, V, size=(B, T))
    ids[::3, :5] = 0
    y = to_categorical(rng.integers(0, 3, size=B), 3)
    results = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        fastlstm.utils.set_random_seed(5)
        m = Sequential([Embedding(V, E), LAYERS[cell](H, return_sequences=True), LAYERS[cell](H),
                        Dense(3, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        m.fit(ids, y, batch_size=35, epochs=2, verbose=0)
        results.append(m.get_weights() + [m.predict(ids, verbose=0)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_kernel_arguments_are_checked(rng):
    x = np.zeros((2, 3, 4), np.float32)
    K, R, b = np.zeros((4, 9), np.float32), np.zeros((3, 9), np.float32), np.zeros(9, np.float32)
    with pytest.raises(ValueError, match="cell must be 'lstm', 'gru', 'gru_reset_before' or 'simple_rnn'"):
        _core.rnn_forward(x, K, R, b, cell="rnn")
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(H, 4H\)"):
        _core.rnn_forward(x, K, R, b)  # (3, 9) is no LSTM's
    with pytest.raises(ValueError, match=r"recurrent_bias must have shape \(3H,\)"):
        _core.rnn_forward(x, K, R, b, cell="gru", recurrent_bias=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="takes no recurrent_bias"):
        _core.rnn_forward(x, np.zeros((4, 3), np.float32), np.zeros((3, 3), np.float32),
                          np.zeros(3, np.float32), cell="simple_rnn", recurrent_bias=np.zeros(3, np.float32))
    ws = _core.Workspace()
    h, seq, c = _core.rnn_forward(x, K, R, b, cell="gru", workspace=ws, return_state=True)
    assert seq is None and c is None and h.shape == (2, 3)
    with pytest.raises(ValueError, match="no cell state"):
        _core.rnn_backward(ws, x, K, R, np.zeros((2, 3), np.float32), None, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(H, 3H\)"):
        _core.rnn_backward(ws, x, K, np.zeros((3, 12), np.float32), np.zeros((2, 3), np.float32))
    assert len(_core.rnn_backward(ws, x, K, R, np.zeros((2, 3), np.float32), need_recurrent_bias=True)) == 5
    with pytest.raises(ValueError, match="activation must be one of"):
        SimpleRNN(3, activation="softplus")
    with pytest.raises(ValueError, match="recurrent_activation must be one of"):
        GRU(3, recurrent_activation="tanh")
    with pytest.raises(ValueError, match="activation must be 'tanh', 'relu' or 'linear'"):
        _core.rnn_forward(x, K, R, b, cell="gru", activation="elu")
    with pytest.raises(ValueError, match="recurrent_activation must be 'sigmoid' or 'hard_sigmoid'"):
        _core.rnn_forward(x, K, R, b, cell="gru", recurrent_activation="tanh")


def keras_pair(keras, V, layers_k, layers_f):
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(V, 6)]
                          + layers_k + [keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(V, 6)] + layers_f + [Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    return m, km


@pytest.mark.keras
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_and_simple_rnn_train_like_keras(rng, go_backwards):
    """Embedding -> GRU(return_sequences) -> SimpleRNN -> Dense and Embedding -> SimpleRNN ->
    GRU -> Dense: Keras's weights give the same predictions, and 3 Adam steps the same
    losses and weights."""
    import keras
    from test_protocol import assert_trains_like_keras

    kw = dict(go_backwards=go_backwards)
    m, km = keras_pair(keras, 30, [keras.layers.GRU(5, return_sequences=True, **kw), keras.layers.SimpleRNN(4)],
                       [GRU(5, return_sequences=True, **kw), SimpleRNN(4)])
    assert_trains_like_keras(rng, m, km, padding=3)
    m, km = keras_pair(keras, 30, [keras.layers.SimpleRNN(5, return_sequences=True, **kw), keras.layers.GRU(4)],
                       [SimpleRNN(5, return_sequences=True, **kw), GRU(4)])
    assert_trains_like_keras(rng, m, km, padding=4)


@pytest.mark.keras
@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_dense_input_and_states_match_keras(rng, cell):
    import keras

    klass = {"gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}[cell]
    xs = rng.normal(size=(4, 6, 3)).astype(np.float32)
    kl = klass(5, return_sequences=True, return_state=True)
    want = [keras.ops.convert_to_numpy(t) for t in kl(xs)]
    fl = LAYERS[cell](5, return_sequences=True, return_state=True)
    fl.build((None, None, 3))
    for w, k in zip(fl.weights, kl.get_weights()):
        assert w.shape == k.shape
        w[...] = k
    got = fl(xs)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=3e-6)
