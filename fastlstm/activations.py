"""Keras's activation functions, by Keras's names, on numpy arrays; each with the derivative a
layer's backward needs. The definitions are Keras 3's on the torch backend
(keras/src/activations/activations.py, keras/src/backend/torch/nn.py): e.g. `gelu` is the
exact erf form (Keras's default `approximate=False`), `softplus` is x above 20 (torch's
threshold), `hard_sigmoid` is relu6(x + 3) / 6.

`get(identifier)` takes what Keras takes: a name, None (linear), or one of these functions
(a layer's backward needs the derivative, so another callable is an error). Layers
(Dense, Activation) hold the canonical name (`"swish"` -> `"silu"`, as Keras's config)."""
import math

import numpy as np

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf; exact in float64


def _float(x):
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _exp(x):
    with np.errstate(over="ignore"):  # exp overflows to inf, as in torch
        return np.exp(x)


def linear(x):
    return _float(x)


def relu(x):
    return np.maximum(_float(x), 0)


def relu6(x):
    return np.clip(_float(x), 0, 6)


def leaky_relu(x, negative_slope=0.2):
    x = _float(x)
    return np.where(x > 0, x, x * negative_slope).astype(x.dtype, copy=False)


def elu(x, alpha=1.0):
    x = _float(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def selu(x):
    x = _float(x)
    return (_SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0)))).astype(x.dtype, copy=False)


def celu(x, alpha=1.0):
    x = _float(x)
    return (np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(np.minimum(x, 0) / alpha))).astype(x.dtype, copy=False)


def _normal_cdf(x):
    """Phi(x) in float64."""
    return 0.5 * (1 + _erf(np.asarray(x, np.float64) * _SQRT_HALF).astype(np.float64))


def gelu(x, approximate=False):
    """x * Phi(x); approximate=True: Keras's tanh form."""
    x = _float(x)
    if approximate:
        x64 = x.astype(np.float64)
        y = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        y = x * _normal_cdf(x)
    return y.astype(x.dtype, copy=False)


def sigmoid(x):
    x = _float(x)
    return 1 / (1 + _exp(-x))


def hard_sigmoid(x):
    return np.clip(_float(x) + 3, 0, 6) / 6


def sparse_sigmoid(x):
    x = _float(x)
    return np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1))).astype(x.dtype, copy=False)


def log_sigmoid(x):
    x = _float(x)
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def silu(x):
    x = _float(x)
    return x * sigmoid(x)


def hard_silu(x):
    x = _float(x)
    return x * hard_sigmoid(x)


def softplus(x):
    x = _float(x)
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(x.dtype, copy=False)


def mish(x):
    x = _float(x)
    return x * np.tanh(softplus(x))


def softsign(x):
    x = _float(x)
    return x / (1 + np.abs(x))


def squareplus(x, b=4):
    x = _float(x)
    return (x + np.sqrt(x * x + b)) / 2


def sparse_plus(x):
    x = _float(x)
    return np.where(x <= -1, 0, np.where(x < 1, 0.25 * (x + 1) ** 2, x)).astype(x.dtype, copy=False)


def tanh(x):
    return np.tanh(_float(x))


def hard_tanh(x):
    return np.clip(_float(x), -1, 1)


def tanh_shrink(x):
    x = _float(x)
    return x - np.tanh(x)


def soft_shrink(x, threshold=0.5):
    x = _float(x)
    return np.where(x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0)).astype(x.dtype, copy=False)


def hard_shrink(x, threshold=0.5):
    x = _float(x)
    return np.where(np.abs(x) > threshold, x, 0).astype(x.dtype, copy=False)


def exponential(x):
    return _exp(_float(x))


def softmax(x, axis=-1):
    x = _float(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = _float(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _sigmoid_slope(x):
    """softplus's derivative with torch's threshold."""
    return np.where(x > 20, 1, sigmoid(x))


def _mish_grad(z, y, dy):
    t = np.tanh(softplus(z))
    return dy * (t + z * (1 - t * t) * _sigmoid_slope(z))


def _gelu_grad(z, y, dy):
    z64 = z.astype(np.float64)
    return dy * (_normal_cdf(z64) + z64 * np.exp(-0.5 * z64 * z64) * _INV_SQRT_2PI)


# name -> (forward(z) -> y, backward(z, y, dy) -> dL/dz): z the pre-activation, y the output,
# dy = dL/dy. softmax and log_softmax are over the last axis.
_TABLE = {
    "linear": (linear, lambda z, y, dy: dy),
    "relu": (relu, lambda z, y, dy: dy * (z > 0)),
    "relu6": (relu6, lambda z, y, dy: dy * ((z > 0) & (z < 6))),
    "leaky_relu": (leaky_relu, lambda z, y, dy: dy * np.where(z > 0, 1, 0.2)),
    "elu": (elu, lambda z, y, dy: dy * np.where(z > 0, 1, np.exp(np.minimum(z, 0)))),
    "selu": (selu, lambda z, y, dy: dy * (_SELU_SCALE * np.where(z > 0, 1, _SELU_ALPHA * np.exp(np.minimum(z, 0))))),
    "celu": (celu, lambda z, y, dy: dy * np.where(z > 0, 1, np.exp(np.minimum(z, 0)))),
    "gelu": (gelu, _gelu_grad),
    "sigmoid": (sigmoid, lambda z, y, dy: dy * y * (1 - y)),
    "hard_sigmoid": (hard_sigmoid, lambda z, y, dy: dy * ((z > -3) & (z < 3)) / 6),
    "sparse_sigmoid": (sparse_sigmoid, lambda z, y, dy: dy * ((z > -1) & (z < 1)) * 0.5),
    "log_sigmoid": (log_sigmoid, lambda z, y, dy: dy * sigmoid(-z)),
    "silu": (silu, lambda z, y, dy: dy * (lambda s: s * (1 + z * (1 - s)))(sigmoid(z))),
    "hard_silu": (hard_silu, lambda z, y, dy: dy * np.where(z < -3, 0, np.where(z <= 3, z / 3 + 0.5, 1))),
    "softplus": (softplus, lambda z, y, dy: dy * _sigmoid_slope(z)),
    "mish": (mish, _mish_grad),
    "softsign": (softsign, lambda z, y, dy: dy / (1 + np.abs(z)) ** 2),
    "squareplus": (squareplus, lambda z, y, dy: dy * (1 + z / np.sqrt(z * z + 4)) / 2),
    "sparse_plus": (sparse_plus, lambda z, y, dy: dy * np.where(z <= -1, 0, np.where(z < 1, 0.5 * (z + 1), 1))),
    "tanh": (tanh, lambda z, y, dy: dy * (1 - y * y)),
    "hard_tanh": (hard_tanh, lambda z, y, dy: dy * ((z > -1) & (z < 1))),
    "tanh_shrink": (tanh_shrink, lambda z, y, dy: dy * np.tanh(z) ** 2),
    "soft_shrink": (soft_shrink, lambda z, y, dy: dy * (np.abs(z) > 0.5)),
    "hard_shrink": (hard_shrink, lambda z, y, dy: dy * (np.abs(z) > 0.5)),
    "exponential": (exponential, lambda z, y, dy: dy * y),
    "softmax": (softmax, lambda z, y, dy: y * (dy - np.sum(dy * y, axis=-1, keepdims=True))),
    "log_softmax": (log_softmax, lambda z, y, dy: dy - np.exp(y) * np.sum(dy, axis=-1, keepdims=True)),
}
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
swish, hard_swish = silu, hard_silu
_NAME_OF = {fn: name for name, (fn, _) in _TABLE.items()}


def _name(identifier):
    """The canonical name of an activation identifier (None -> 'linear'), or Keras's error."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name in _TABLE:
            return name
    elif callable(identifier):
        if identifier in _NAME_OF:
            return _NAME_OF[identifier]
        raise ValueError(f"fastlstm cannot use the activation {identifier!r}: a layer's backward needs its "
                         f"derivative; pass a Keras name or a fastlstm.activations function ({sorted(_TABLE)})")
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}; known: "
                     f"{sorted(_TABLE) + sorted(_ALIASES)}")


def get(identifier):
    """The activation function for a name, None (linear) or a function of this module."""
    return _TABLE[_name(identifier)][0]


def serialize(activation):
    """The name Keras writes in a layer's config ('silu' for swish)."""
    return _name(activation)


def deserialize(config, custom_objects=None):
    return get(config)


def forward(name, z):
    """The activation `name` (canonical) applied to z, in z's float dtype."""
    with np.errstate(over="ignore", under="ignore"):
        return _TABLE[name][0](z)


def backward(name, z, y, dy):
    """dL/dz from dy = dL/dy, for y = forward(name, z); float32."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.asarray(_TABLE[name][1](z, y, dy), dtype=np.float32)
