"""Keras's weight initializers, by Keras's names. Each takes a shape and returns float32."""
import numpy as np

from fastlstm.utils import rng


def glorot_uniform(shape):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)), over the whole matrix (Keras's fans)."""
    fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng().uniform(-limit, limit, size=shape).astype(np.float32)


def orthogonal(shape, gain=1.0):
    """Orthogonal rows or columns (QR of a normal matrix, signs fixed), as Keras's Orthogonal."""
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = rng().normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(np.float32)


def uniform(shape, minval=-0.05, maxval=0.05):
    """U(minval, maxval): Keras's RandomUniform defaults, used by Embedding."""
    return rng().uniform(minval, maxval, size=shape).astype(np.float32)


def zeros(shape):
    return np.zeros(shape, np.float32)


_BY_NAME = {"glorot_uniform": glorot_uniform, "orthogonal": orthogonal, "uniform": uniform,
            "random_uniform": uniform, "zeros": zeros}


def get(name):
    """The initializer called `name`, or a callable passed through."""
    if callable(name):
        return name
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown initializer {name!r}; known: {sorted(_BY_NAME)}") from None
