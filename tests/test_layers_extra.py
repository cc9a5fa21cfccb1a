"""The layers around the recurrent ones (Dropout, SpatialDropout1D, GlobalMaxPooling1D,
GlobalAveragePooling1D, Flatten, Activation, InputLayer / Input): forward and backward
against float64 numpy, finite differences and torch autograd; dropout's statistics; models
against Keras 3 (torch backend) from the same weights, with the same dropout masks put into
both; configs, names, trainable and layer weights as Keras's."""
import pickle
import threading
from contextlib import nullcontext

import numpy as np
import pytest

import fastlstm
from fastlstm import Sequential
from fastlstm.layers import (GRU, LSTM, Activation, Bidirectional, Dense, Dropout, Embedding, Flatten,
                             GlobalAveragePooling1D, GlobalMaxPooling1D, Input, InputLayer, KerasTensor,
                             LogitsGradient, SimpleRNN, SpatialDropout1D)
from fastlstm.preprocessing import to_categorical
from test_protocol import assert_same_training


def finite_difference(layer, x, d, eps=0.25, mask=None):
    """d(sum(layer(x) * d))/dx by central differences, for layers linear in x where x moves
    by eps (Dropout with a fixed mask, pooling, Flatten): exact up to float32 rounding."""
    g = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        f = lambda v: float(np.sum(np.asarray(layer.call(v, mask=mask), np.float64) * d))
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


# ---- Dropout, SpatialDropout1D --------------------------------------------------------

def test_dropout_rate_scaling_and_inference(rng):
    fastlstm.utils.set_random_seed(4)
    layer = Dropout(0.3)
    x = rng.normal(size=(400, 60)).astype(np.float32)
    y = layer.call(x, training=True)
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01                    # 24,000 draws: 4 sigma ~ 0.012
    np.testing.assert_array_equal(y[~dropped], x[~dropped] / np.float32(0.7))
    d = rng.normal(size=x.shape).astype(np.float32)
    dx, grads = layer.backward(d)
    assert grads == [] and np.array_equal(dx == 0, dropped)
    np.testing.assert_array_equal(dx[~dropped], d[~dropped] / np.float32(0.7))
    assert layer.call(x) is x and layer.call(x, training=False) is x       # inference: the input itself
    assert not np.array_equal(layer.call(x, training=True), y)              # a new draw each call
    assert np.all(Dropout(1.0).call(x, training=True) == 0)
    assert Dropout(0.0).call(x, training=True) is x
    mask = rng.random((4, 5)) > 0.5
    assert Dropout(0.5).compute_mask(x, mask) is mask                       # the mask passes


def test_dropout_draws_are_seeded_and_patchable(rng, monkeypatch):
    x = np.ones((50, 20), np.float32)
    a, b = Dropout(0.5, seed=7), Dropout(0.5, seed=7)
    first = [a.call(x, training=True) for _ in range(2)]
    np.testing.assert_array_equal(first[0], b.call(x, training=True))
    np.testing.assert_array_equal(first[1], b.call(x, training=True))
    assert not np.array_equal(*first)
    runs = []
    for _ in range(2):  # unseeded: fastlstm's generator
        fastlstm.utils.set_random_seed(9)
        runs.append(Dropout(0.5).call(x, training=True))
    np.testing.assert_array_equal(*runs)
    keep = rng.random((50, 20)) > 0.5
    layer = Dropout(0.5)
    monkeypatch.setattr(layer, "_keep_mask", lambda shape: keep)
    np.testing.assert_array_equal(layer.call(x, training=True), np.where(keep, 2.0, 0.0))


def test_dropout_noise_shape_and_gradient(rng):
    layer = Dropout(0.5, noise_shape=(None, 1, 4), seed=1)
    x = rng.normal(size=(6, 5, 4)).astype(np.float32)
    y = layer.call(x, training=True)
    kept = y != 0
    assert np.all(kept == kept[:, :1]) and kept.any() and not kept.all()   # one draw for all steps
    d = rng.normal(size=x.shape)
    dx, _ = layer.backward(d.astype(np.float32))
    fixed = layer._keep
    layer._keep_mask = lambda shape: fixed[:, :1]
    np.testing.assert_allclose(dx, finite_difference(_Training(layer), x, d), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not broadcast"):
        Dropout(0.5, noise_shape=(None, 3, 4)).call(x, training=True)
    for bad in ("abc", (2, 0), (2, 1.5)):
        with pytest.raises(ValueError, match="noise_shape"):
            Dropout(0.5, noise_shape=bad)
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="rate"):
            Dropout(bad)


class _Training:
    """A layer whose call runs in training mode (its drawn mask fixed by the test)."""

    def __init__(self, layer):
        self.layer = layer

    def call(self, x, mask=None):
        return self.layer.call(x, training=True, mask=mask)


def test_spatial_dropout_drops_whole_channels(rng):
    fastlstm.utils.set_random_seed(5)
    layer = SpatialDropout1D(0.25)
    x = rng.normal(size=(300, 7, 40)).astype(np.float32) + 5   # never 0
    y = layer.call(x, training=True)
    kept = y != 0                                              # (B,T,C)
    assert np.all(kept == kept[:, :1])                         # one draw per sample and channel
    assert abs(1 - kept[:, 0].mean() - 0.25) < 0.015           # 12,000 draws: 4 sigma ~ 0.016
    np.testing.assert_array_equal(y[kept], x[kept] / np.float32(0.75))
    dx, _ = layer.backward(np.ones_like(x))
    assert np.array_equal(dx != 0, kept)
    assert layer.call(x) is x
    with pytest.raises(ValueError, match="expected ndim=3"):
        layer.call(x[:, 0], training=True)
    with pytest.raises(ValueError, match="expected ndim=3"):
        Sequential([SpatialDropout1D(0.1)]).build((None, 4))


def test_dropout_keeps_an_embedding_fused_at_inference(rng):
    emb = Embedding(10, 3)
    emb.build()
    tokens = emb.call(rng.integers(0, 10, size=(4, 6)))
    for layer in (Dropout(0.5), SpatialDropout1D(0.5)):
        assert layer.call(tokens) is tokens                     # the LSTM after it reads table rows
        np.testing.assert_array_equal(layer.call(tokens, training=True) != 0,
                                      layer._keep & (np.asarray(tokens) != 0))


# ---- pooling ---------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_average_pooling_with_and_without_mask(rng, data_format, keepdims):
    B, T, C = 5, 6, 3
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    mask = rng.random((B, T)) > 0.4
    mask[:, 0] = True
    layer = GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims)
    x_in = x if data_format == "channels_last" else x.transpose(0, 2, 1).copy()
    x64 = x.astype(np.float64)
    for m, want in ((None, x64.mean(1)), (mask, (x64 * mask[..., None]).sum(1) / mask.sum(1)[:, None])):
        y = layer.call(x_in, training=True, mask=m)
        out_shape = (B, C) if not keepdims else (B, 1, C) if data_format == "channels_last" else (B, C, 1)
        assert y.shape == out_shape == layer.output_shape(x_in.shape) and y.dtype == np.float32
        np.testing.assert_allclose(y.reshape(B, C), want, rtol=1e-6, atol=1e-6)
        d = rng.normal(size=y.shape)
        dx, grads = layer.backward(d.astype(np.float32))
        assert grads == [] and dx.shape == x_in.shape
        np.testing.assert_allclose(dx, finite_difference(layer, x_in, d, mask=m), rtol=1e-5, atol=1e-6)
    assert layer.compute_mask(x_in, mask) is None


@pytest.mark.keras
def test_pooling_layers_on_masks_match_keras(rng):
    """Average: a fully masked row is 0/0 = NaN as in Keras; max ignores the mask (with Keras's
    warning)."""
    import keras

    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], bool)
    want = keras.ops.convert_to_numpy(keras.layers.GlobalAveragePooling1D()(x, mask=mask))
    got = GlobalAveragePooling1D().call(x, mask=mask)
    assert np.isnan(want[1]).all() and np.isnan(got[1]).all()
    np.testing.assert_allclose(got, want, atol=1e-7)
    with pytest.warns(UserWarning, match="does not support masking"):
        got = GlobalMaxPooling1D().call(x, mask=mask)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(keras.layers.GlobalMaxPooling1D()(x)), atol=0)
    np.testing.assert_array_equal(got, x.max(1))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_max_pooling_gradient_shares_ties_as_torch(rng, data_format):
    import torch

    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    x[0, :3, 0] = 5.0                   # a three-way tie
    x[1, :, 1] = 0.0                    # all steps tie (zero outputs at padding)
    x_in = x if data_format == "channels_last" else x.transpose(0, 2, 1).copy()
    layer = GlobalMaxPooling1D(data_format=data_format, keepdims=True)
    y = layer.call(x_in, training=True)
    d = rng.normal(size=y.shape)
    dx, _ = layer.backward(d.astype(np.float32))
    t = torch.tensor(x_in, dtype=torch.float64, requires_grad=True)
    ty = torch.amax(t, dim=1 if data_format == "channels_last" else 2, keepdim=True)
    (ty * torch.tensor(d)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=0)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-6, atol=1e-7)
    untied = rng.normal(size=(3, 5, 2)).astype(np.float32)
    plain = GlobalMaxPooling1D()
    plain.call(untied, training=True)
    d = rng.normal(size=(3, 2))
    np.testing.assert_allclose(plain.backward(d.astype(np.float32))[0], finite_difference(plain, untied, d, eps=1e-3),
                               rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="0 steps"):
        plain.call(np.zeros((2, 0, 3), np.float32))
    with pytest.raises(ValueError, match="expected ndim=3"):
        plain.output_shape((None, 4))


def test_pooling_and_flatten_arguments():
    with pytest.raises(ValueError, match="data_format"):
        GlobalAveragePooling1D(data_format="nhwc")
    assert GlobalMaxPooling1D(data_format="channels_first", keepdims=True).output_shape((None, 4, 7)) == (None, 4, 1)
    assert Flatten().output_shape((None, 4, 7)) == (None, 28)
    assert Flatten().output_shape((None, None, 7)) == (None, None)
    assert Flatten().output_shape((None,)) == (None, 1)


# ---- Flatten, Activation -----------------------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_flatten_matches_keras(rng, data_format):
    import keras

    x = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
    layer = Flatten(data_format=data_format)
    y = layer.call(x, training=True)
    np.testing.assert_array_equal(y, keras.ops.convert_to_numpy(keras.layers.Flatten(data_format=data_format)(x)))
    d = rng.normal(size=y.shape)
    np.testing.assert_allclose(layer.backward(d.astype(np.float32))[0], finite_difference(layer, x, d),
                               rtol=1e-5, atol=1e-6)
    assert Flatten().call(np.arange(3.0)).shape == (3, 1)
    with pytest.warns(UserWarning, match="does not support masking"):
        Flatten().call(x[:, :, :, 0], mask=np.ones((3, 4), bool))


def test_activation_layer_matches_dense_activations_and_carries_logits(rng):
    x = rng.normal(size=(4, 3, 5)).astype(np.float32)
    for name in ("gelu", "swish", "elu", "softmax"):
        layer = Activation(name)
        y = layer.call(x, training=True)
        want = fastlstm.activations.get(name)(x)
        np.testing.assert_array_equal(np.asarray(y), want)
        d = rng.normal(size=x.shape).astype(np.float32)
        np.testing.assert_array_equal(layer.backward(d)[0], fastlstm.activations.backward(
            fastlstm.activations.serialize(name), x, want, d))
    sm = Activation("softmax")
    out = sm.call(x, training=True)
    assert out.logits is not None and out.activation == "softmax"
    g = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(sm.backward(LogitsGradient(g))[0], g)   # the logits are the input
    mask = np.ones((4, 3), bool)
    assert sm.compute_mask(x, mask) is mask
    with pytest.raises(ValueError, match="Could not interpret activation"):
        Activation("nope")


# ---- models against Keras ----------------------------------------------------------------

def token_data(rng, n=32, T=9, V=30, K=3, min_real=1):
    """Pre-padded ids (every row keeps at least min_real real tokens), one-hot labels."""
    x = rng.integers(1, V, size=(n, T))
    for row in x:
        row[: rng.integers(0, T - min_real + 1)] = 0
    return x, to_categorical(rng.integers(0, K, size=n), K)


def shared_dropout(monkeypatch, rng, layer, shape, rate, steps=3):
    """The same keep-masks (`steps` draws of `shape`) for a fastlstm Dropout layer and for
    Keras's dropout (keras/src/backend/torch/random.py), in the order the steps draw them."""
    import torch
    from keras.src.backend.torch import random as keras_random

    masks = [rng.random(shape) >= rate for _ in range(steps)]
    ours, theirs = iter(masks), iter(masks)
    monkeypatch.setattr(layer, "_keep_mask", lambda s: next(ours))

    def keras_dropout(inputs, rate, noise_shape=None, seed=None):
        keep = torch.tensor(next(theirs)).broadcast_to(inputs.shape)
        return torch.where(keep, inputs / (1.0 - rate), torch.zeros_like(inputs))

    monkeypatch.setattr(keras_random, "dropout", keras_dropout)


@pytest.mark.keras
def test_max_pooling_and_dropout_head_trains_like_keras(rng, monkeypatch):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5, return_sequences=True), keras.layers.GlobalMaxPooling1D(),
                           keras.layers.Dropout(0.4), keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    drop = Dropout(0.4)
    m = Sequential([Embedding(30, 6), LSTM(5, return_sequences=True), GlobalMaxPooling1D(), drop,
                    Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    shared_dropout(monkeypatch, rng, drop, (32, 5), 0.4)
    assert_same_training(m, km, *token_data(rng))


@pytest.mark.keras
@pytest.mark.parametrize("pooling", ["average", "max"])
def test_masked_pooling_heads_train_like_keras(rng, pooling):
    """Embedding(mask_zero) -> LSTM(return_sequences) -> pooling: the average over the real
    steps; the max over all steps (Keras's max ignores the mask)."""
    import keras

    pool = {"average": (keras.layers.GlobalAveragePooling1D, GlobalAveragePooling1D),
            "max": (keras.layers.GlobalMaxPooling1D, GlobalMaxPooling1D)}[pooling]
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6, mask_zero=True),
                           keras.layers.LSTM(5, return_sequences=True), pool[0](),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6, mask_zero=True), LSTM(5, return_sequences=True), pool[1](),
                    Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    with pytest.warns(UserWarning, match="does not support masking") if pooling == "max" else nullcontext():
        assert_same_training(m, km, *token_data(rng))


@pytest.mark.keras
def test_spatial_dropout_model_trains_like_keras(rng, monkeypatch):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.SpatialDropout1D(0.3), keras.layers.LSTM(5),
                           keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    drop = SpatialDropout1D(0.3)
    m = Sequential([Embedding(30, 6), drop, LSTM(5), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    shared_dropout(monkeypatch, rng, drop, (32, 1, 6), 0.3)
    assert_same_training(m, km, *token_data(rng))


@pytest.mark.keras
def test_input_activation_and_flatten_model_trains_like_keras(rng):
    """keras.Input first, then Embedding -> LSTM(return_sequences) -> Activation -> Flatten
    -> Dense: a fixed length, known from the Input."""
    import keras

    km = keras.Sequential([keras.Input(shape=(9,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5, return_sequences=True), keras.layers.Activation("gelu"),
                           keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Input(shape=(9,), dtype="int32"), Embedding(30, 6), LSTM(5, return_sequences=True),
                    Activation("gelu"), Flatten(), Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    assert m.built and len(m.layers) == 5 and m.layers[0].name == "embedding"   # the InputLayer is not a layer
    assert [w.shape for w in m.weights] == [tuple(w.shape) for w in km.weights]
    assert_same_training(m, km, *token_data(rng))


# ---- InputLayer / Input --------------------------------------------------------------------

def test_input_and_input_layer_as_the_first_item(rng):
    x = rng.integers(0, 20, size=(4, 7))
    plain = Sequential([Embedding(20, 3), LSTM(4)])
    with pytest.warns(UserWarning, match="input_shape"):
        legacy = InputLayer(input_shape=(7,))
    for first in (Input(shape=(7,), dtype="int32"), InputLayer(shape=(7,)), InputLayer(batch_shape=(None, 7)),
                  InputLayer(batch_input_shape=(None, 7)), legacy):
        m = Sequential([first, Embedding(20, 3), LSTM(4)])
        assert m.built and len(m.layers) == 2 and len(m.weights) == 4
        m.set_weights(plain.get_weights())
        np.testing.assert_array_equal(m.predict(x, verbose=0), plain.predict(x, verbose=0))
    t = Input(shape=(None,), dtype="int32", name="ids")
    assert isinstance(t, KerasTensor) and t.shape == (None, None) and t.dtype == "int32" and t.name == "ids"
    layer = t._keras_history[0]
    assert isinstance(layer, InputLayer) and layer.name == "ids" and layer.batch_input_shape() == (None, None)
    assert Input(shape=(3,), batch_size=8).shape == (8, 3)
    m = Sequential()
    m.add(Input(shape=(5,)))
    m.add(Dense(2))
    assert m.built and m.layers[0].kernel.shape == (5, 2)
    with pytest.raises(ValueError, match="first item"):
        m.add(Input(shape=(2,)))
    with pytest.raises(ValueError, match="first item"):
        Sequential([Input(shape=(5,)), InputLayer(shape=(5,))])
    for kw, msg in ((dict(), "must pass a `shape`"), (dict(shape=(2,), batch_shape=(None, 2)), "both `shape`"),
                    (dict(batch_size=2, batch_shape=(None, 2)), "both `batch_size`"),
                    (dict(shape=(2.5,)), "invalid dimension"), (dict(shape=(2,), sparse=True), "sparse"),
                    (dict(shape=(2,), dtype="nope"), "dtype")):
        with pytest.raises(ValueError, match=msg):
            InputLayer(**kw)


@pytest.mark.keras
def test_input_layer_config_and_tensor_names_match_keras():
    import keras

    keras.backend.clear_session()
    k_layer = keras.layers.InputLayer(shape=(9,), dtype="int32")
    k_tensor = keras.Input(shape=(None, 4))
    layer = InputLayer(shape=(9,), dtype="int32")
    tensor = Input(shape=(None, 4))
    assert layer.get_config() == k_layer.get_config()
    assert (tensor.name, tensor.shape, tensor.dtype) == (k_tensor.name, k_tensor.shape, k_tensor.dtype)
    assert tensor._keras_history[0].name == k_tensor._keras_history[0].name == "input_layer_1"


# ---- configs, names, trainable, weights ----------------------------------------------------

@pytest.mark.keras
def test_configs_match_keras():
    import keras

    L = keras.layers
    cases = [(Dropout, L.Dropout, dict(rate=0.3, noise_shape=(None, 1, 4), seed=3)),
             (SpatialDropout1D, L.SpatialDropout1D, dict(rate=0.2)),
             (GlobalMaxPooling1D, L.GlobalMaxPooling1D, dict(keepdims=True)),
             (GlobalAveragePooling1D, L.GlobalAveragePooling1D, dict(data_format="channels_first")),
             (Flatten, L.Flatten, dict()), (Activation, L.Activation, dict(activation="swish")),
             (Activation, L.Activation, dict(activation=None))]
    for ours, theirs, kw in cases:
        keras.backend.clear_session()
        fastlstm.backend.clear_session()
        config = ours(**kw).get_config()
        assert config == theirs(**kw).get_config()
        assert ours(**config).get_config() == config   # a config makes the same layer
    assert Dropout(0.5, trainable=False, name="d").get_config()["trainable"] is False


@pytest.mark.keras
def test_default_names_follow_keras():
    import keras

    L = keras.layers
    make = [lambda M: M.LSTM(3), lambda M: M.LSTM(3), lambda M: M.Dense(2), lambda M: M.Dense(2, name="dense_5"),
            lambda M: M.Dense(2), lambda M: M.SimpleRNN(2), lambda M: M.GRU(2), lambda M: M.Embedding(3, 2),
            lambda M: M.GlobalMaxPooling1D(), lambda M: M.GlobalAveragePooling1D(), lambda M: M.SpatialDropout1D(0.1),
            lambda M: M.Dropout(0.1), lambda M: M.Flatten(), lambda M: M.Activation("relu"),
            lambda M: M.InputLayer(shape=(3,)), lambda M: M.Masking(), lambda M: M.Bidirectional(M.LSTM(3)),
            lambda M: M.Bidirectional(M.GRU(3, name="g"))]
    keras.backend.clear_session()
    want = [f(L) for f in make]
    fastlstm.backend.clear_session()
    got = [f(fastlstm.layers) for f in make]
    assert [g.name for g in got] == [w.name for w in want]
    for g, w in zip(got[-2:], want[-2:]):
        assert (g.forward_layer.name, g.backward_layer.name) == (w.forward_layer.name, w.backward_layer.name)
    assert got[-2].forward_layer.name == "forward_lstm_2"


def test_names_reset_per_session_and_thread_and_survive_copies():
    fastlstm.backend.clear_session()
    assert [LSTM(2).name, LSTM(2).name, Dense(1).name] == ["lstm", "lstm_1", "dense"]
    fastlstm.utils.clear_session()
    assert LSTM(2).name == "lstm"
    other = []
    thread = threading.Thread(target=lambda: other.append(LSTM(2).name))
    thread.start()
    thread.join()
    assert other == ["lstm"] and LSTM(2).name == "lstm_1"         # per thread, as Keras's state
    m = Sequential([Embedding(5, 2, name="words"), LSTM(3)])
    assert [layer.name for layer in pickle.loads(pickle.dumps(m)).layers] == ["words", "lstm_2"]
    for bad in ("a/b", 3):
        with pytest.raises(ValueError, match="name"):
            Dense(2, name=bad)


def test_trainable_and_weight_lists(rng):
    dense = Dense(3, trainable=False)
    dense.build((None, 4))
    assert not dense.trainable and dense.trainable_weights == [] and len(dense.non_trainable_weights) == 2
    assert all(a is b for a, b in zip(dense.non_trainable_weights, dense.weights))
    dense.trainable = True
    assert [id(w) for w in dense.trainable_weights] == [id(w) for w in dense.weights] and not dense.non_trainable_weights
    with pytest.raises(ValueError, match="boolean"):
        LSTM(3, trainable=1)
    assert LSTM(3, trainable=False).get_config()["trainable"] is False
    bi = Bidirectional(LSTM(3))
    bi.build((None, None, 2))
    bi.forward_layer.trainable = False
    assert [id(w) for w in bi.trainable_weights] == [id(w) for w in bi.backward_layer.weights]
    assert [id(w) for w in bi.non_trainable_weights] == [id(w) for w in bi.forward_layer.weights]
    bi.trainable = False                                   # as Keras's setter: both layers follow
    assert not bi.forward_layer.trainable and not bi.backward_layer.trainable and bi.trainable_weights == []
    frozen = Bidirectional(GRU(3), trainable=False)
    assert not frozen.forward_layer.trainable and not frozen.backward_layer.trainable
    inner_frozen = Bidirectional(GRU(3, trainable=False))
    assert not inner_frozen.forward_layer.trainable and not inner_frozen.backward_layer.trainable
    assert Dropout(0.2).trainable_weights == [] and Dropout(0.2).weights == []


@pytest.mark.keras
def test_trainable_lists_match_keras():
    import keras

    L = keras.layers
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), L.Embedding(10, 4, trainable=False),
                           L.Bidirectional(L.LSTM(3, trainable=False)), L.Dense(2, trainable=False), L.Dense(2)])
    m = Sequential([Embedding(10, 4, trainable=False), Bidirectional(LSTM(3, trainable=False)),
                    Dense(2, trainable=False), Dense(2)])
    m.build((None, None))
    for ours, theirs in zip(m.layers, km.layers):
        for what in ("weights", "trainable_weights", "non_trainable_weights"):
            assert [w.shape for w in getattr(ours, what)] == [tuple(w.shape) for w in getattr(theirs, what)]
        assert ours.trainable == theirs.trainable


def test_layer_get_and_set_weights(rng):
    layer = Bidirectional(GRU(3, return_sequences=True))
    layer.build((None, None, 2))
    arrays = layer.weights
    values = [rng.normal(size=w.shape) for w in arrays]
    layer.set_weights(values)
    assert all(a is b for a, b in zip(layer.weights, arrays))                # in place
    for got, want in zip(layer.get_weights(), values):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    copies = layer.get_weights()
    copies[0][...] = 0
    assert layer.forward_layer.kernel.any()                                   # copies, not views
    with pytest.raises(ValueError, match="expecting 6 weights"):
        layer.set_weights(values[:5])
    with pytest.raises(ValueError, match=r"weight shape \(2, 9\) is not compatible"):
        layer.set_weights([np.zeros((3, 9))] + values[1:])
    with pytest.raises(TypeError, match="numeric"):
        layer.set_weights([np.full((2, 9), "a")] + values[1:])
    np.testing.assert_array_equal(layer.weights[0], values[0].astype(np.float32))   # a failed set changes nothing


@pytest.mark.keras
def test_layer_weights_move_between_keras_and_fastlstm(rng):
    import keras

    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    for ours, theirs in ((SimpleRNN(4), keras.layers.SimpleRNN(4)), (Dense(3, activation="elu"),
                                                                   keras.layers.Dense(3, activation="elu"))):
        theirs(x)
        ours.build(x.shape)
        ours.set_weights(theirs.get_weights())
        np.testing.assert_allclose(ours(x), keras.ops.convert_to_numpy(theirs(x)), atol=3e-6)
        theirs.set_weights([w * 2 for w in ours.get_weights()])
        ours.set_weights(theirs.get_weights())
        np.testing.assert_allclose(ours(x), keras.ops.convert_to_numpy(theirs(x)), atol=3e-6)
