"""Regularizers (fastlstm.regularizers: L1, L2, L1L2) and the layer side of regularization and
freezing: penalties against float64 numpy and Keras, gradients against finite differences,
`weight_regularizers()` / `activity_penalty()` / `trainable_weights` on every layer, and
training steps against Keras 3 (torch backend) with the wiring Keras's trainer does."""
import numpy as np
import pytest

from fastlstm import Sequential, regularizers
from fastlstm.layers import GRU, LSTM, Bidirectional, Dense, Embedding, LogitsGradient, SimpleRNN
from fastlstm.optimizers import Adam
from fastlstm.preprocessing import to_categorical
from fastlstm.regularizers import L1, L1L2, L2

REGULARIZERS = [L1(0.3), L2(0.05), L1L2(l1=0.02, l2=0.1), L1L2(l2=0.1), L1L2(l1=0.1)]


@pytest.mark.parametrize("reg", REGULARIZERS, ids=lambda r: f"{type(r).__name__}{r.get_config()}")
def test_penalty_and_gradient_match_float64_and_finite_differences(rng, reg):
    w = rng.normal(size=(7, 5))
    w = (np.sign(w) * (0.3 + np.abs(w))).astype(np.float32)   # |w| > eps: L1 is linear around each
    w.flat[0] = 0.0                                        # abs's gradient is 0 at 0 (as torch's)
    config = reg.get_config()
    w64 = w.astype(np.float64)
    want = config.get("l1", 0) * np.abs(w64).sum() + config.get("l2", 0) * np.square(w64).sum()
    penalty = reg(w)
    assert isinstance(penalty, float)
    np.testing.assert_allclose(penalty, want, rtol=1e-6)
    g = reg.gradient(w)
    assert g.dtype == np.float32 and g.shape == w.shape
    eps = 0.25                                             # exact for L2's square and L1's lines
    fd = np.zeros(w.shape)
    for i in np.ndindex(w.shape):
        if i == (0, 0):
            continue
        up, down = w64.copy(), w64.copy()
        up[i] += eps
        down[i] -= eps
        fd[i] = (reg(up) - reg(down)) / (2 * eps)
    np.testing.assert_allclose(g.flat[1:], fd.flat[1:], rtol=1e-4, atol=1e-5)
    assert g.flat[0] == 2 * config.get("l2", 0) * 0.0


@pytest.mark.keras
def test_regularizers_match_keras():
    import keras

    K = keras.regularizers
    w = np.random.default_rng(3).normal(size=(40, 30)).astype(np.float32)
    pairs = [(L1(0.3), K.L1(0.3)), (L2(0.05), K.L2(0.05)), (L1L2(0.02, 0.1), K.L1L2(0.02, 0.1)),
             (regularizers.l1(), K.l1()), (regularizers.l2(), K.l2()), (regularizers.l1_l2(l2=0.2), K.l1_l2(l2=0.2))]
    for name in ("l1", "l2", "L1", "L2", "l1l2", "L1L2"):
        pairs.append((regularizers.get(name), K.get(name)))
    for ours, theirs in pairs:
        assert type(ours).__name__ == type(theirs).__name__ and ours.get_config() == theirs.get_config()
        np.testing.assert_allclose(ours(w), float(keras.ops.convert_to_numpy(theirs(w))), rtol=1e-6)
        again = regularizers.get(keras.regularizers.serialize(theirs))       # Keras's serialized form
        assert type(again) is type(ours) and again.get_config() == ours.get_config()
        assert regularizers.serialize(ours) == keras.regularizers.serialize(theirs)
    # 'l1_l2': the 0.01 factors Keras documents (Keras 3.15's get does not know the name)
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.01, "l2": 0.01}


def test_bad_regularizers_are_clear_errors(rng):
    for bad in (-1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="non-negative float"):
            L2(bad)
    with pytest.raises(ValueError, match="Could not interpret regularizer"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="not a bare function"):
        Dense(3, kernel_regularizer=lambda w: 0.01 * np.sum(w * w))

    class OnlyPenalty(regularizers.Regularizer):
        def __call__(self, x):
            return 1.0

    dense = Dense(2, kernel_regularizer=OnlyPenalty())
    dense.build((None, 3))
    (w, reg), = dense.weight_regularizers()
    with pytest.raises(NotImplementedError, match="gradient"):
        reg.gradient(w)
    with pytest.raises(ValueError, match="Unknown regularizer"):
        regularizers.get({"class_name": "OrthogonalRegularizer", "config": {}})


def test_every_layer_names_its_regularized_weights():
    r1, r2, r3 = L1(0.1), L2(0.2), L1L2(0.1, 0.1)
    emb = Embedding(10, 4, embeddings_regularizer=r1)
    dense = Dense(3, kernel_regularizer=r2, bias_regularizer="l1")
    assert emb.weight_regularizers() == []                                  # nothing before build
    emb.build()
    dense.build((None, 4))
    assert [(id(w), r) for w, r in emb.weight_regularizers()] == [(id(emb.embeddings), r1)]
    (k, rk), (b, rb) = dense.weight_regularizers()
    assert k is dense.kernel and rk is r2 and b is dense.bias and isinstance(rb, L1)
    for cls in (LSTM, GRU, SimpleRNN):
        layer = cls(3, kernel_regularizer=r1, recurrent_regularizer=r2, bias_regularizer=r3)
        layer.build((None, None, 4))
        assert [(id(w), r) for w, r in layer.weight_regularizers()] == \
            [(id(layer.kernel), r1), (id(layer.recurrent_kernel), r2), (id(layer.bias), r3)]
        assert [r for _, r in cls(3, recurrent_regularizer=r2, use_bias=False, input_shape=(None, 4))
                .weight_regularizers()] == []                               # unbuilt
    bi = Bidirectional(LSTM(3, recurrent_regularizer=r2))
    bi.build((None, None, 4))
    assert [id(w) for w, _ in bi.weight_regularizers()] == [id(bi.forward_layer.recurrent_kernel),
                                                            id(bi.backward_layer.recurrent_kernel)]
    bi.backward_layer.trainable = False                 # as Keras: only trainable weights count
    assert [id(w) for w, _ in bi.weight_regularizers()] == [id(bi.forward_layer.recurrent_kernel)]
    dense.trainable = False
    assert dense.weight_regularizers() == []


@pytest.mark.keras
def test_layer_penalties_match_keras_layer_losses(rng):
    """Keras's `layer.losses` after a call: the weights' penalties plus the activity penalty
    (the output's, divided by the batch size)."""
    import keras

    x = rng.normal(size=(6, 4)).astype(np.float32)
    kd = keras.layers.Dense(3, activation="tanh", kernel_regularizer=keras.regularizers.L1(0.01),
                            bias_regularizer="l2", activity_regularizer=keras.regularizers.L2(0.05))
    kd(x)
    kd.set_weights([rng.normal(size=(4, 3)), rng.normal(size=3)])
    kd(x)                                                  # the activity penalty of this call
    assert len(kd.losses) == 3
    want = sum(float(keras.ops.convert_to_numpy(v)) for v in kd.losses)
    dense = Dense(3, activation="tanh", kernel_regularizer=L1(0.01), bias_regularizer="l2",
                  activity_regularizer=L2(0.05))
    dense.build((None, 4))
    dense.set_weights(kd.get_weights())
    y = dense.call(x)
    got = sum(r(w) for w, r in dense.weight_regularizers()) + dense.activity_penalty(y)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert Dense(3).activity_penalty(y) == 0.0
    assert dense.activity_penalty(np.zeros((0, 3), np.float32)) == 0.0      # Keras's divide_no_nan


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softmax"])
def test_activity_regularizer_gradient_in_dense_backward(rng, activation):
    """backward(d) of a Dense with an activity regularizer is the gradient of
    sum(y * d) + activity_penalty(y), against float64 torch autograd; a LogitsGradient
    (the loss's dL/dz) gets the penalty's part through the activation."""
    import torch

    B, I, U = 5, 4, 3
    x = rng.normal(size=(B, I)).astype(np.float32)
    dense = Dense(U, activation=activation, activity_regularizer=L1L2(l1=0.05, l2=0.2))
    dense.build((None, I))
    y = dense.call(x, training=True)
    up = rng.normal(size=(B, U))
    tx, tk, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, dense.kernel, dense.bias))
    tz = tx @ tk + tb
    ty = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softmax": lambda z: torch.softmax(z, -1)}[activation](tz)
    penalty = (0.05 * ty.abs().sum() + 0.2 * (ty * ty).sum()) / B
    np.testing.assert_allclose(dense.activity_penalty(y), penalty.item(), rtol=1e-5)
    ((ty * torch.tensor(up)).sum() + penalty).backward()
    dx, (dk, db) = dense.backward(up.astype(np.float32))
    for got, want in ((dx, tx.grad), (dk, tk.grad), (db, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    if activation != "tanh":  # a loss that hands dL/dz of sum(y * up): the penalty's part still comes in
        tz2 = tz.detach().clone().requires_grad_(True)
        ty2 = torch.sigmoid(tz2) if activation == "sigmoid" else torch.softmax(tz2, -1)
        dz_up = torch.autograd.grad((ty2 * torch.tensor(up)).sum(), tz2)[0].numpy()
        _, (dk2, _) = dense.backward(LogitsGradient(dz_up.astype(np.float32)))
        np.testing.assert_allclose(dk2, tk.grad.numpy(), rtol=1e-4, atol=1e-5)


def assert_steps_like_keras(m, km, x, y, frozen=()):
    """From Keras's weights: predictions (3e-6), three train_on_batch losses with the penalties (1e-5)
    and the weights after them (2e-5); the arrays in `frozen` do not move at all, the others do."""
    m.set_weights(km.get_weights())
    start = m.get_weights()
    np.testing.assert_allclose(m.predict(x, verbose=0), km.predict(x, verbose=0), atol=3e-6)
    before = [w.copy() for w in frozen]
    m.compile(loss="categorical_crossentropy", optimizer=Adam())
    for _ in range(3):  # Sequential's step: penalties in the loss and gradients, frozen weights left alone
        want = float(km.train_on_batch(x, y))
        assert abs(m.train_on_batch(x, y) - want) <= 1e-5
    for got, want in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, atol=2e-5)
    # evaluate counts the penalties too, batch by batch (activity penalties per batch)
    np.testing.assert_allclose(m.evaluate(x, y, batch_size=10, verbose=0), km.evaluate(x, y, batch_size=10, verbose=0),
                               rtol=1e-5)
    for w, w0 in zip(frozen, before):
        np.testing.assert_array_equal(w, w0)
    for w, w0 in zip(m.weights, start):
        assert any(w is f for f in frozen) or not np.array_equal(w, w0)


def small_batch(rng, n=32, T=9, V=30, K=3):
    x = rng.integers(1, V, size=(n, T))
    x[:, :3] = 0
    return x, to_categorical(rng.integers(0, K, size=n), K)


@pytest.mark.keras
def test_frozen_layers_train_like_keras(rng):
    import keras

    L = keras.layers
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), L.Embedding(30, 6, trainable=False),
                           L.LSTM(5), L.Dense(4, activation="relu", trainable=False, kernel_regularizer="l2"),
                           L.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6, trainable=False), LSTM(5),
                    Dense(4, activation="relu", trainable=False, kernel_regularizer="l2"),
                    Dense(3, activation="softmax")])
    frozen = m.layers[0].weights + m.layers[2].weights
    assert [w.shape for w in m.layers[2].non_trainable_weights] == [(5, 4), (4,)]
    assert_steps_like_keras(m, km, *small_batch(rng), frozen=frozen)   # the LSTM under a frozen Dense learns


@pytest.mark.keras
def test_regularized_layers_train_like_keras(rng):
    import keras

    L, R = keras.layers, keras.regularizers
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"),
                           L.Embedding(30, 6, embeddings_regularizer=R.L2(1e-2)),
                           L.LSTM(5, return_sequences=True, kernel_regularizer=R.L1(1e-2),
                                  recurrent_regularizer=R.L2(5e-2), bias_regularizer=R.L1L2(1e-2, 1e-2)),
                           L.GRU(4, kernel_regularizer="l2", bias_regularizer="l1"),
                           L.Dense(4, activation="elu", kernel_regularizer="l1", bias_regularizer=R.L2(0.1),
                                   activity_regularizer=R.L2(0.05)),
                           L.Dense(3, activation="softmax", kernel_regularizer=R.L1L2(0.01, 0.02))])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6, embeddings_regularizer=L2(1e-2)),
                    LSTM(5, return_sequences=True, kernel_regularizer=L1(1e-2), recurrent_regularizer=L2(5e-2),
                         bias_regularizer=L1L2(1e-2, 1e-2)),
                    GRU(4, kernel_regularizer="l2", bias_regularizer="l1"),
                    Dense(4, activation="elu", kernel_regularizer="l1", bias_regularizer=L2(0.1),
                          activity_regularizer=L2(0.05)),
                    Dense(3, activation="softmax", kernel_regularizer=L1L2(0.01, 0.02))])
    assert_steps_like_keras(m, km, *small_batch(rng))


@pytest.mark.keras
def test_regularized_bidirectional_frozen_by_its_setter_trains_like_keras(rng):
    """Bidirectional.trainable = False freezes both directions (Keras's setter); their
    regularizers then count for nothing, as in Keras."""
    import keras

    L = keras.layers
    kb = L.Bidirectional(L.GRU(4, return_sequences=True, kernel_regularizer="l2"))
    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), L.Embedding(30, 6), kb,
                           L.Bidirectional(L.LSTM(3, recurrent_regularizer="l1")), L.Dense(3, activation="softmax")])
    kb.trainable = False
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), Bidirectional(GRU(4, return_sequences=True, kernel_regularizer="l2")),
                    Bidirectional(LSTM(3, recurrent_regularizer="l1")), Dense(3, activation="softmax")])
    m.layers[1].trainable = False
    assert m.layers[1].weight_regularizers() == [] and len(m.layers[2].weight_regularizers()) == 2
    assert_steps_like_keras(m, km, *small_batch(rng), frozen=m.layers[1].weights)
