"""Keras's activations (fastlstm.activations) in Dense and Activation: every name's values
and gradients against Keras's own function on torch tensors (float32, and float64 autograd
through a whole Dense), a sigmoid's logits, identifiers as Keras takes them, and models with
the new activations trained against Keras 3 (torch backend)."""
import numpy as np
import pytest

from fastlstm import Sequential, activations
from fastlstm.layers import LSTM, Dense, Embedding, LogitsGradient
from fastlstm.preprocessing import to_categorical
from test_protocol import assert_same_training

NAMES = sorted(activations._TABLE) + ["swish", "hard_swish"]


def pre_activations(rng, shape=(6, 9)):
    """Values across every piece of every activation: normal(0, 3), softplus's threshold
    (above 20), big negatives, and the breakpoints' neighbourhoods."""
    z = rng.normal(scale=3, size=shape).astype(np.float32)
    z.flat[:12] = [25, -25, 19.5, -30, 0.3, -0.3, 2.9, -2.9, 3.1, -3.1, 5.9, 6.1]
    return z


@pytest.mark.keras
@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_keras_on_torch(rng, name):
    """float32 forward and dL/dz against keras.activations.get(name) on torch tensors with
    autograd: Keras's definition, the torch backend's numbers."""
    import keras
    import torch

    z = pre_activations(rng)
    dy = rng.normal(size=z.shape).astype(np.float32)
    t = torch.tensor(z, requires_grad=True)
    want = keras.activations.get(name)(t)
    (want * torch.tensor(dy)).sum().backward()
    canonical = activations.serialize(name)
    y = activations.forward(canonical, z)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=2e-6, atol=1e-6)
    dz = activations.backward(canonical, z, y, dy)
    assert dz.dtype == np.float32
    np.testing.assert_allclose(dz, t.grad.numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(activations.get(name)(z), y)     # the public function is the layers'


@pytest.mark.keras
@pytest.mark.parametrize("name", NAMES)
def test_dense_forward_and_gradients_match_float64_autograd(rng, name):
    """A Dense with each activation: output and every gradient (input, kernel, bias)
    against float64 torch autograd through Keras's activation."""
    import keras
    import torch

    B, I, U = 7, 5, 4
    x = rng.normal(size=(B, I)).astype(np.float32)
    dense = Dense(U, activation=name)
    dense.build((None, I))
    dense.kernel[...] = rng.normal(scale=1.5, size=dense.kernel.shape)
    dense.bias[...] = rng.normal(size=U)
    y = dense.call(x, training=True)
    up = rng.normal(size=(B, U))
    tx, tk, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, dense.kernel, dense.bias))
    ty = keras.activations.get(name)(tx @ tk + tb)
    (ty * torch.tensor(up)).sum().backward()
    scale = max(1.0, float(np.abs(ty.detach().numpy()).max()))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=3e-6 * scale)
    dx, (dk, db) = dense.backward(up.astype(np.float32))
    for got, want in ((dx, tx.grad), (dk, tk.grad), (db, tb.grad)):
        want = want.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_sigmoid_and_softmax_outputs_carry_their_logits(rng):
    x = rng.normal(size=(5, 3)).astype(np.float32)
    for name in ("sigmoid", "softmax"):
        dense = Dense(4, activation=name)
        dense.build((None, 3))
        out = dense.call(x, training=True)
        z = x.astype(np.float64) @ dense.kernel + dense.bias
        assert out.activation == name
        np.testing.assert_allclose(out.logits, z, atol=1e-6)
        g = rng.normal(size=(5, 4)).astype(np.float32)
        dx, (dk, db) = dense.backward(LogitsGradient(g))          # the loss's dL/dz goes straight in
        np.testing.assert_allclose(dx, g @ dense.kernel.T, atol=1e-5)
        np.testing.assert_allclose(dk, x.T @ g, atol=1e-5)
        np.testing.assert_allclose(db, g.sum(0), atol=1e-5)
    relu = Dense(4, activation="relu")
    relu.build((None, 3))
    assert getattr(relu.call(x), "logits", None) is None


def test_activation_identifiers_as_keras():
    assert Dense(2).activation == "linear" and Dense(2, activation=None).activation == "linear"
    assert Dense(2, activation="swish").activation == "silu"                 # Keras's config name
    assert Dense(2, activation=activations.gelu).activation == "gelu"
    assert Dense(2, activation=activations.hard_swish).activation == "hard_silu"
    assert activations.get(None) is activations.linear and activations.get("swish") is activations.silu
    with pytest.raises(ValueError, match="Could not interpret activation function identifier"):
        Dense(2, activation="swishy")
    with pytest.raises(ValueError, match="needs its derivative"):
        Dense(2, activation=lambda z: z * 2)
    np.testing.assert_allclose(activations.gelu(np.float32([1.0]), approximate=True), [0.8411920], rtol=1e-6)
    np.testing.assert_allclose(activations.leaky_relu(np.float32([-1.0]), negative_slope=0.1), [-0.1])
    assert activations.relu([-1, 2]).dtype == np.float32                     # integer input: float32


@pytest.mark.keras
@pytest.mark.parametrize("stack", [("gelu", "silu", "elu", "selu"), ("softplus", "mish", "leaky_relu", "softsign"),
                                   ("hard_silu", "relu6", "exponential", "log_softmax")])
def test_models_with_new_activations_train_like_keras(rng, stack):
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5)] + [keras.layers.Dense(6, activation=a) for a in stack] +
                          [keras.layers.Dense(3, activation="softmax")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), LSTM(5)] + [Dense(6, activation=a) for a in stack] +
                   [Dense(3, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(1, 30, size=(32, 9))
    x[:, :3] = 0
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))


@pytest.mark.keras
def test_sigmoid_head_with_categorical_crossentropy_trains_like_keras(rng):
    """A sigmoid's logits are not a softmax's: categorical cross-entropy reads its
    probabilities (normalised and clipped, as Keras's)."""
    import keras

    km = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(30, 6),
                           keras.layers.LSTM(5), keras.layers.Dense(3, activation="sigmoid")])
    km.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam())
    m = Sequential([Embedding(30, 6), LSTM(5), Dense(3, activation="sigmoid")])
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = rng.integers(1, 30, size=(32, 9))
    assert_same_training(m, km, x, to_categorical(rng.integers(0, 3, size=32), 3))
