"""dropout and recurrent_dropout with Keras's semantics: a keep-mask per sample for all time
steps, 0 or 1/(1-rate); a mask per gate (implementation 1) when recurrent_dropout > 0; never
at inference. With injected masks, equal to float64 PyTorch autograd and to Keras's layers
given the same masks; statistically, the rate and the scaling."""
import numpy as np
import pytest

import torch_rnn
import fastlstm
from fastlstm import Sequential
from fastlstm.layers import GRU, LSTM, Dense, Embedding, SimpleRNN
from fastlstm.preprocessing import to_categorical

LAYERS = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def fixed_masks(rng, layer, B, E):
    """Masks of _dropout_masks's shapes, rate 0.4 (scaled 1/0.6), from rng."""
    x_m, h_m = layer._dropout_masks(B, E)
    draw = lambda m: None if m is None else (rng.random(m.shape) >= 0.4).astype(np.float32) / np.float32(0.6)
    return draw(x_m), draw(h_m)


CASES = [dict(dropout=0.3), dict(dropout=0.3, implementation=1), dict(recurrent_dropout=0.3),
         dict(dropout=0.2, recurrent_dropout=0.3), dict(dropout=0.3, go_backwards=True)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("tokens", [False, True])
def test_injected_masks_match_reference(rng, monkeypatch, cell, case, tokens):
    """Outputs and every gradient (weights, input) of a training call with fixed masks,
    pre-padded token input or dense input, with a mask on some rows."""
    kw = dict(CASES[case])
    if cell == "simple_rnn":
        kw.pop("implementation", None)
    B, T, V, E, H = 5, 6, 11, 3, 4
    layer = LAYERS[cell](H, return_sequences=True, return_state=True, **kw)
    layer.build((None, None, E))
    if layer.use_bias:
        layer.bias[...] = rng.normal(scale=0.3, size=layer.bias.shape)
    x_m, h_m = fixed_masks(rng, layer, B, E)
    if "recurrent_dropout" in kw or kw.get("implementation") == 1:
        assert x_m is None or x_m.shape[1] == GATES[cell]
    monkeypatch.setattr(layer, "_dropout_masks", lambda B_, E_: (x_m, h_m))
    ids = rng.integers(1, V, size=(B, T))
    ids[:2, :3] = 0
    emb = Embedding(V, E)
    emb.build()
    x = emb.embeddings[ids]
    outs = layer.call(emb.call(ids, training=True) if tokens else x, training=True)
    up = {"seq": rng.normal(size=(B, T, H)), "h": rng.normal(size=(B, H))}
    if cell == "lstm":
        up["c"] = rng.normal(size=(B, H))
    seq, _, states, dx, dw = torch_rnn.gradients(cell, x, [layer.kernel, layer.recurrent_kernel, layer.bias], up,
                                                 x_masks=x_m, h_masks=h_m, go_backwards=layer.go_backwards)
    np.testing.assert_allclose(outs[0], seq, atol=3e-6)
    for got, want in zip(outs[1:], states):
        np.testing.assert_allclose(got, want, atol=3e-6)
    d_in, grads = layer.backward([up["seq"], up["h"]] + ([up["c"]] if cell == "lstm" else []))
    torch_rnn.assert_gradients(grads, dw, d_in, dx, *((emb, ids) if tokens else ()))
    # inference never drops: the plain reference, and the same answer twice
    inf = layer(x)
    np.testing.assert_allclose(inf[0], torch_rnn.outputs(cell, x, [layer.kernel, layer.recurrent_kernel, layer.bias],
                                                         go_backwards=layer.go_backwards)[0], atol=3e-6)
    np.testing.assert_array_equal(inf[0], layer(x)[0])


def test_masks_rate_scaling_and_one_per_sample(rng):
    fastlstm.utils.set_random_seed(11)
    layer = LSTM(64, dropout=0.25, recurrent_dropout=0.4)
    layer.build((None, None, 50))
    x_m, h_m = layer._dropout_masks(400, 50)
    assert layer.implementation == 1 and x_m.shape == (400, 4, 50) and h_m.shape == (400, 4, 64)
    for m, rate in ((x_m, 0.25), (h_m, 0.4)):
        assert m.dtype == np.float32
        assert set(np.unique(m)) == {0.0, np.float32(1) / np.float32(1 - rate)}
        assert abs(np.mean(m == 0) - rate) < 0.01          # 80,000+ draws: 4 sigma ~ 0.007
        assert abs(m.mean() - 1) < 0.02                    # inverted scaling keeps the mean
        assert not np.array_equal(m[:, 0], m[:, 1])         # a mask per gate
    one = GRU(8, dropout=0.5)
    one.build((None, None, 6))
    assert one.implementation == 2 and one._dropout_masks(3, 6)[0].shape == (3, 1, 6)
    assert one._dropout_masks(3, 6)[1] is None
    # the same mask at every step: with identity-free checks, a dropped input feature of a
    # sample gets no gradient at any step
    layer = SimpleRNN(4, dropout=0.5, seed=3)
    layer.build((None, None, 6))
    x = rng.normal(size=(8, 5, 6)).astype(np.float32)
    layer.call(x, training=True)
    dx, _ = layer.backward(np.ones((8, 4), np.float32))
    dropped = layer._x_masks[:, 0] == 0  # (B,E)
    assert dropped.any() and np.all(dx.transpose(0, 2, 1)[dropped] == 0)
    assert np.all(dx.transpose(0, 2, 1)[~dropped] != 0)


def test_dropout_arguments_follow_keras():
    assert LSTM(3, dropout=1.5).dropout == 1.0 and LSTM(3, recurrent_dropout=-1).recurrent_dropout == 0.0
    assert LSTM(3, recurrent_dropout=0.1).implementation == 1 and LSTM(3).implementation == 2
    assert LSTM(3, dropout=0.2).get_config()["dropout"] == 0.2
    with pytest.raises(ValueError, match="dropout must be a number"):
        GRU(3, dropout="0.2")
    with pytest.raises(ValueError, match="implementation must be 1 or 2"):
        LSTM(3, implementation=3)
    with pytest.raises(TypeError, match="unexpected arguments"):
        SimpleRNN(3, implementation=1)
    # rate 1.0: Keras drops only for 0 < rate < 1
    layer = GRU(3, dropout=1.0)
    layer.build((None, None, 2))
    assert layer._dropout_masks(2, 2) == (None, None)


def test_seeded_dropout_training_is_repeatable_and_thread_independent(rng, threads):
    ids = rng.integers(0, 30, size=(40, 10))
    ids[::2, :4] = 0
    y = to_categorical(rng.integers(0, 3, size=40), 3)
    results = []
    for n in (1, 2, 2):
        fastlstm.set_num_threads(n)
        fastlstm.utils.set_random_seed(2)
        m = Sequential([Embedding(30, 6), LSTM(8, dropout=0.2, recurrent_dropout=0.2, return_sequences=True),
                        GRU(5, recurrent_dropout=0.3), Dense(3, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        m.fit(ids, y, batch_size=20, epochs=2, verbose=0)
        results.append(m.get_weights())
    for a, b, c in zip(*results):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.keras
@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_keras_layers_given_the_same_masks_agree(rng, cell):
    """Keras's layer in training mode with our masks put in its cell's mask cache gives the
    same outputs: the masks mean the same (gate order, implementation 1, scaling)."""
    import keras

    B, T, E, H = 4, 5, 3, 6
    kl = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}[cell](
        H, dropout=0.3, recurrent_dropout=0.3, return_sequences=True)
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    kl(x)  # build
    fl = LAYERS[cell](H, dropout=0.3, recurrent_dropout=0.3, return_sequences=True)
    fl.build((None, None, E))
    for w, k in zip(fl.weights, kl.get_weights()):
        w[...] = k
    x_m, h_m = fixed_masks(rng, fl, B, E)
    as_keras = lambda m: [keras.ops.convert_to_tensor(m[:, g]) for g in range(m.shape[1])] if m.shape[1] > 1 \
        else keras.ops.convert_to_tensor(m[:, 0])
    kl.cell.get_dropout_mask = lambda step_input: as_keras(x_m)
    kl.cell.get_recurrent_dropout_mask = lambda step_input: as_keras(h_m)
    want = keras.ops.convert_to_numpy(kl(x, training=True))
    fl._dropout_masks = lambda B_, E_: (x_m, h_m)
    np.testing.assert_allclose(fl.call(x, training=True), want, atol=3e-6)


@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("E", [7, 37])  # one partial panel of inputs; several, the last partial
def test_masked_projection_matches_numpy_for_any_thread_count(rng, threads, G, E):
    """affine_masked: the rows of sample b, [sample_rows[b], sample_rows[b+1]) (here 0 to 9 of
    them, one sample none), are x_b @ (kernel, column block g scaled by mask[b,g]) + bias; and
    its backward, against float64 numpy; bitwise the same with 1 and 2 threads. Blocks of 11
    columns: a panel of 16 columns spans two blocks."""
    from fastlstm import _core

    B, M = 19, 3 * 11
    counts = rng.integers(1, 10, size=B)
    counts[4] = 0
    lo = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    N = int(lo[-1])
    sample = np.repeat(np.arange(B), counts)               # row -> its sample
    x = rng.normal(size=(N, E)).astype(np.float32)
    K = rng.normal(size=(E, M)).astype(np.float32)
    b = rng.normal(size=M).astype(np.float32)
    mask = ((rng.random((B, G, E)) > 0.3) / 0.7).astype(np.float32)
    dz = rng.normal(size=(N, M)).astype(np.float32)
    cols = np.repeat(np.arange(G), M // G)                 # column -> its block
    Kb = K[None] * mask[:, cols].transpose(0, 2, 1)       # (B,E,M) each sample's kernel
    Kr = Kb[sample].astype(np.float64)                    # (N,E,M) each row's
    want = np.einsum("ne,nem->nm", x.astype(np.float64), Kr) + b
    want_dx = np.einsum("nm,nem->ne", dz.astype(np.float64), Kr)
    want_dk = np.einsum("ne,nm,nem->em", x.astype(np.float64), dz, mask[sample][:, cols].transpose(0, 2, 1))
    runs = []
    for n in (1, 2):
        fastlstm.set_num_threads(n)
        z = _core.affine_masked(x, K, b, mask, lo)
        runs.append([z, *_core.affine_masked_backward(x, K, mask, dz, lo)])
    for got, w in zip(runs[0], [want, want_dx, want_dk, dz.sum(0)]):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-4)
    for a, c in zip(*runs):
        np.testing.assert_array_equal(a, c)
    # the kernel masked first in float32 (one rounding per entry), then the plain product: the same bits
    for s in (0, 1, B - 1):
        rows = slice(lo[s], lo[s + 1])
        np.testing.assert_array_equal(runs[1][0][rows], _core.affine(x[rows], Kb[s], b))
        np.testing.assert_array_equal(runs[1][1][rows], _core.affine_backward(x[rows], Kb[s], dz[rows])[0])
    no_dx = _core.affine_masked_backward(x, K, mask, dz, lo, need_dx=False)
    assert no_dx[0] is None
    for a, c in zip(no_dx[1:], runs[1][2:]):
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="G dividing M"):
        _core.affine_masked(x, K, b, np.ones((B, 2, E), np.float32), lo)
    for bad in (lo[::-1].copy(), lo + 1, np.minimum(lo, N - 1), lo[:-1]):
        with pytest.raises(ValueError, match="sample_rows"):
            _core.affine_masked(x, K, b, mask, bad)
        with pytest.raises(ValueError, match="sample_rows"):
            _core.affine_masked_backward(x, K, mask, dz, bad)
    with pytest.raises(ValueError, match="sample_rows must have dtype int32"):
        _core.affine_masked(x, K, b, mask, lo.astype(np.int64))


@pytest.mark.keras
@pytest.mark.parametrize("which", ["dropout", "recurrent_dropout"])
def test_simple_rnn_rate_one_drops_everything_as_keras(rng, which):
    """Keras's SimpleRNN applies its masks for any rate > 0 (LSTM and GRU only for 0 < rate < 1):
    rate 1.0 zeroes the input (or h_{t-1}) in training."""
    import keras

    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    kl = keras.layers.SimpleRNN(5, return_sequences=True, **{which: 1.0})
    kl(x)
    fl = SimpleRNN(5, return_sequences=True, **{which: 1.0})
    fl.build((None, None, 2))
    for w, k in zip(fl.weights, kl.get_weights()):
        w[...] = k
    want = keras.ops.convert_to_numpy(kl(x, training=True))
    np.testing.assert_allclose(fl.call(x, training=True), want, atol=3e-6)
    assert not np.allclose(fl.call(x, training=True), fl(x))  # training differs from inference
    lstm = LSTM(3, **{which: 1.0})
    lstm.build((None, None, 2))
    assert lstm._dropout_masks(3, 2) == (None, None)  # LSTM and GRU: 0 < rate < 1 only


def test_bidirectional_over_tokens_with_input_dropout_in_one_direction_trains(rng):
    from fastlstm.layers import Bidirectional

    m = Sequential([Embedding(20, 3), Bidirectional(LSTM(4), backward_layer=LSTM(4, dropout=0.5, go_backwards=True)),
                    Dense(2, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(0, 20, size=(8, 6))
    m.build(x.shape)
    before = m.get_weights()
    m.fit(x, to_categorical(rng.integers(0, 2, size=8), 2), epochs=1, batch_size=4, verbose=0)
    after = m.get_weights()
    assert all(np.isfinite(w).all() and not np.array_equal(w, w0) for w, w0 in zip(after, before))


def test_bidirectional_over_tokens_with_input_dropout_matches_reference(rng, monkeypatch):
    """Both directions drop their inputs (each sample's distinct tokens projected with its
    masks) and their token gradients, rows repeated across samples, meet in the Embedding:
    the output and d embeddings against the float64 reference of each direction."""
    from fastlstm.layers import Bidirectional

    B, T, V, E, H = 5, 7, 6, 3, 4
    emb = Embedding(V, E)
    emb.build()
    bi = Bidirectional(LSTM(H, dropout=0.3), backward_layer=LSTM(H, dropout=0.4, go_backwards=True), merge_mode="sum")
    bi.build((None, T, E))
    layers = (bi.forward_layer, bi.backward_layer)
    masks = [fixed_masks(rng, layer, B, E) for layer in layers]
    for layer, m in zip(layers, masks):
        monkeypatch.setattr(layer, "_dropout_masks", lambda B_, E_, m=m: m)
    ids = rng.integers(0, V, size=(B, T))
    ids[0, :4] = 0
    out = bi.call(emb.call(ids, training=True), training=True)
    up = rng.normal(size=(B, H))
    x = emb.embeddings[ids]
    want_out, want_dx = 0, 0
    for layer, (x_m, h_m) in zip(layers, masks):
        _, last, _, dx, _ = torch_rnn.gradients("lstm", x, [layer.kernel, layer.recurrent_kernel, layer.bias],
                                                {"last": up}, x_masks=x_m, h_masks=h_m, go_backwards=layer.go_backwards)
        want_out, want_dx = want_out + last, want_dx + dx
    np.testing.assert_allclose(out, want_out, atol=3e-6)
    d_in, _ = bi.backward(up)
    want = np.zeros(emb.embeddings.shape)
    np.add.at(want, ids.reshape(-1), want_dx.reshape(-1, E))
    np.testing.assert_allclose(emb.backward(d_in)[1][0], want, rtol=1e-4, atol=2e-5)


def test_tokens_per_sample_lists_each_samples_distinct_tokens(rng):
    """Input dropout's table over tokens: sample b's rows are its distinct tokens (np.unique of
    its ids), and its ids map to rows of its own that hold the same tokens."""
    from fastlstm.layers import _tokens_per_sample

    ids = rng.integers(0, 9, size=(6, 11)).astype(np.int32)
    ids[2] = 3
    tokens, rows, lo = _tokens_per_sample(ids)
    assert tokens.dtype == rows.dtype == lo.dtype == np.int32 and lo[0] == 0 and lo[-1] == len(tokens)
    for b in range(len(ids)):
        np.testing.assert_array_equal(tokens[lo[b]:lo[b + 1]], np.unique(ids[b]))
        assert ((rows[b] >= lo[b]) & (rows[b] < lo[b + 1])).all()
        np.testing.assert_array_equal(tokens[rows[b]], ids[b])
    tokens, rows, lo = _tokens_per_sample(np.zeros((3, 0), np.int32))
    assert tokens.shape == (0,) and rows.shape == (3, 0) and list(lo) == [0, 0, 0, 0]


@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3), (0, 0, 3)])
@pytest.mark.parametrize("tokens", [False, True])
def test_dropout_on_empty_batches_and_sequences(rng, shape, tokens):
    """No samples, or no steps, under input dropout: the outputs of the same layer without
    dropout (zeros, or nothing), and the backward's gradients of the right shapes."""
    B, T, E = shape
    layer = LSTM(4, dropout=0.3, recurrent_dropout=0.2, return_sequences=True)
    layer.build((None, None, E))
    if tokens:
        emb = Embedding(5, E)
        emb.build()
        x = emb.call(np.zeros((B, T), np.int32), training=True)
    else:
        x = np.zeros(shape, np.float32)
    out = layer.call(x, training=True)
    assert out.shape == (B, T, 4) and not out.any()
    d_in, grads = layer.backward(np.ones((B, T, 4), np.float32))
    assert [g.shape for g in grads] == [w.shape for w in layer.weights]
    assert not any(g.any() for g in grads)
    if tokens:
        assert not emb.backward(d_in)[1][0].any()
    else:
        assert d_in.shape == shape
