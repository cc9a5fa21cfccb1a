"""Keras's weight initializers, by Keras's names (classes, and their snake_case aliases as in
Keras). An initializer is called with a shape and returns a float32 array; `get_config()` /
`from_config()` and `serialize()` / `get()` read and write them as Keras's config dicts
({"class_name": "GlorotUniform", "config": {...}}), so they travel in .keras files."""
import math

import numpy as np

from fastlstm.utils import rng


class Initializer:
    """Base class: `__call__(shape, dtype=None)` -> float32 array of `shape`."""

    def __call__(self, shape, dtype=None):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class _Random(Initializer):
    """A random initializer: draws from fastlstm's generator (utils.set_random_seed), or,
    with an integer `seed`, from its own, so that every call gives the same values (Keras's
    rule for a seeded initializer)."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
        self.seed = seed

    def _gen(self):
        return rng() if self.seed is None else np.random.default_rng(int(self.seed))

    def get_config(self):
        return {"seed": self.seed}


class Zeros(Initializer):
    def __call__(self, shape, dtype=None):
        return np.zeros(shape, np.float32)


class Ones(Initializer):
    def __call__(self, shape, dtype=None):
        return np.ones(shape, np.float32)


class Constant(Initializer):
    """Every element `value` (a number)."""

    def __init__(self, value=0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"Constant takes a number, got {value!r}")
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.value, np.float32)

    def get_config(self):
        return {"value": self.value}


class RandomUniform(_Random):
    """U(minval, maxval); Keras's defaults (-0.05, 0.05) are Embedding's."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape, dtype=None):
        return self._gen().uniform(self.minval, self.maxval, size=shape).astype(np.float32)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


def _truncated_normal(gen, shape, stddev):
    """N(0, stddev) redrawn outside two standard deviations (Keras's truncated normal)."""
    out = gen.normal(size=shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = gen.normal(size=int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


class RandomNormal(_Random):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype=None):
        return self._gen().normal(self.mean, self.stddev, size=shape).astype(np.float32)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomNormal):
    def __call__(self, shape, dtype=None):
        return (self.mean + _truncated_normal(self._gen(), shape, self.stddev)).astype(np.float32)


def compute_fans(shape):
    """Keras's (fan_in, fan_out): (n, n) for a vector, (rows, cols) for a matrix; a
    convolution kernel (..., in, out) counts its receptive field."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = math.prod(shape[:-2])
    return int(shape[-2] * receptive), int(shape[-1] * receptive)


class VarianceScaling(_Random):
    """Keras's VarianceScaling: n = fan_in, fan_out or their mean (`mode`); "uniform" draws
    U(-l, l), l = sqrt(3 scale / n); "truncated_normal" a normal truncated at 2 standard
    deviations, stddev sqrt(scale / n) / .87962566103423978; "untruncated_normal" N(0, sqrt(scale / n))."""
    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("uniform", "truncated_normal", "untruncated_normal")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"Argument `scale` must be positive float. Received: scale={scale}")
        distribution = "truncated_normal" if distribution == "normal" else distribution
        if mode not in self._MODES:
            raise ValueError(f"Invalid `mode` argument: {mode}. Please use one of {self._MODES}")
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(f"Invalid `distribution` argument: {distribution}. Please use one of {self._DISTRIBUTIONS}")
        if input_axes is not None or output_axes is not None:
            raise ValueError("input_axes and output_axes are not supported by fastlstm's initializers")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        gen = self._gen()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale)
            out = gen.uniform(-limit, limit, size=shape)
        elif self.distribution == "truncated_normal":
            out = _truncated_normal(gen, shape, math.sqrt(scale) / 0.87962566103423978)
        else:
            out = gen.normal(0.0, math.sqrt(scale), size=shape)
        return out.astype(np.float32)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, "input_axes": None, "output_axes": None}


class _NamedVarianceScaling(VarianceScaling):
    """A VarianceScaling with a fixed (scale, mode, distribution), `_args`: only the seed is set."""
    _args = None

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        super().__init__(*self._args, seed=seed, input_axes=input_axes, output_axes=output_axes)

    def get_config(self):
        return {"seed": self.seed, "input_axes": None, "output_axes": None}


class GlorotUniform(_NamedVarianceScaling):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Dense's and the recurrent kernels' default."""
    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_NamedVarianceScaling):
    _args = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_NamedVarianceScaling):
    _args = (2.0, "fan_in", "uniform")


class HeNormal(_NamedVarianceScaling):
    _args = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_NamedVarianceScaling):
    _args = (1.0, "fan_in", "uniform")


class LecunNormal(_NamedVarianceScaling):
    _args = (1.0, "fan_in", "truncated_normal")


class Orthogonal(_Random):
    """Orthogonal rows or columns (QR of a normal matrix, signs fixed) times `gain`, over the
    matrix (prod(shape[:-1]), shape[-1]), as Keras's Orthogonal."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape, dtype=None):
        if len(shape) < 2:
            raise ValueError(f"The tensor to initialize must be at least two-dimensional. Received: shape={shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = self._gen().normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).astype(np.float32)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


def _snake(name):
    """Keras's snake_case of a class name: GlorotUniform -> glorot_uniform."""
    return "".join("_" + c.lower() if c.isupper() and k else c.lower() for k, c in enumerate(name))


_CLASSES = (Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
            GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal)
# Keras's names: each class by its name and snake_case name, and Keras's aliases
_BY_NAME = {**{c.__name__: c for c in _CLASSES}, **{_snake(c.__name__): c for c in _CLASSES},
            "uniform": RandomUniform, "normal": RandomNormal, "zero": Zeros, "one": Ones}
# Keras's snake_case aliases of the classes
zeros, ones, constant, random_uniform, random_normal, truncated_normal = (
    Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal)
variance_scaling, glorot_uniform, glorot_normal, orthogonal = VarianceScaling, GlorotUniform, GlorotNormal, Orthogonal
he_uniform, he_normal, lecun_uniform, lecun_normal = HeUniform, HeNormal, LecunUniform, LecunNormal


def get(identifier):
    """An initializer from Keras's identifiers: a name ("glorot_uniform", "GlorotUniform",
    "uniform", ...), a config dict {"class_name", "config"} (as in .keras files), an
    initializer, or any callable `shape -> array`, passed through. None stays None (a layer
    then uses Keras's default for a weight without one, glorot_uniform)."""
    if identifier is None or isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict):
        cls = _BY_NAME.get(identifier.get("class_name"))
        if cls is None or not isinstance(identifier.get("config", {}), dict):
            raise ValueError(f"unknown initializer {identifier.get('class_name')!r}; known: {sorted(_BY_NAME)}")
        return cls.from_config(identifier.get("config") or {})
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"unknown initializer {identifier!r}; known: {sorted(_BY_NAME)}")
        return _BY_NAME[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"unknown initializer {identifier!r}; known: {sorted(_BY_NAME)}")


def serialize(initializer):
    """Keras's config dict of an initializer (None stays None). Any other callable is
    returned as it is: a layer's config can hold it, a .keras file cannot."""
    if not isinstance(initializer, Initializer):
        return initializer
    return {"module": "keras.initializers", "class_name": type(initializer).__name__,
            "config": initializer.get_config(), "registered_name": None}
