"""Keras-style layers, one protocol for all: weights created once in `build(input_shape)`,
forward in `call(inputs, training=False, mask=None)`, `compute_mask(inputs, mask)`, and
`backward(d) -> (d inputs, [d weight, ...])` in the order of `weights`.

Each layer keeps what its backward needs from the last training-mode `call`. Fusions live
in the layers: Embedding hands on a lazy TokenSequence (a recurrent layer gathers projected
rows of its table; any other layer materialises it), and a softmax Dense's output carries
its logits (`Output.logits`, as Keras's `_keras_logits`), so the loss is taken from them.
A layer is callable on arrays (`LSTM(8)(x)`): it is built from the input's shape.
"""
import threading
import warnings

import numpy as np

from fastlstm import _core, _fork, activations, backend, initializers, regularizers, utils




def _check_dtype(dtype, name):
    """fastlstm layers compute in float32: dtype None, 'float32' or its Keras policy."""
    policy = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if policy is None:
        return
    try:
        ok = np.dtype(policy) == np.float32
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: fastlstm layers compute in float32, got dtype={dtype!r}")


class TokenSequence:
    """Embedding's output, not yet gathered: ids (B,T) int32 (checked) of `embedding`'s
    table. np.asarray() gives embeddings[ids] (B,T,E)."""

    def __init__(self, embedding, ids):
        self.embedding, self.ids = embedding, ids

    @property
    def shape(self):
        return self.ids.shape + (self.embedding.output_dim,)

    def __len__(self):
        return len(self.ids)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a TokenSequence is gathered into a new array: it cannot be read without a copy")
        out = self.embedding.embeddings[self.ids]
        return out if dtype is None else out.astype(dtype, copy=False)


class TokenRowsGradient:
    """dL/d(embedding rows) from a layer that read a TokenSequence: rows (U,) token ids, a
    token possibly more than once, values (U,E): a token's gradient is the sum of its rows'
    values (every other token's is zero)."""

    def __init__(self, rows, values):
        self.rows, self.values = rows, values


class Output(np.ndarray):
    """An activation's output that keeps its pre-activation `logits` (same shape) and the
    activation's name (a loss takes the logits only of the activation it pairs with). Arrays
    derived from it (slices, ufunc results, copies) carry no logits."""

    @staticmethod
    def of(y, logits, activation):
        out = y.view(Output)
        out.logits, out.activation = logits, activation
        return out

    def __array_finalize__(self, obj):
        self.logits = self.activation = None


class LogitsGradient:
    """dL/d(logits) of an Output, from a loss that took the logits (handed to backward)."""

    def __init__(self, values):
        self.values = values


class Layer:
    # Attributes that hold per-call scratch (workspaces, what backward needs from the last
    # training call): never pickled or deep-copied, re-created empty by _init_scratch.
    _scratch = ()

    def __init__(self, name=None, input_shape=None, trainable=True, dtype=None, **kwargs):
        input_dim = kwargs.pop("input_dim", None)  # Keras 2's Dense(units, input_dim=...)
        if input_shape is None and input_dim is not None:
            input_shape = (input_dim,)
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        # Keras's default names: the snake_case class name, then _1, _2, ... (backend.clear_session)
        self.name = backend.auto_name(type(self).__name__) if name is None else name
        if not isinstance(self.name, str) or "/" in self.name:
            raise ValueError(f"Argument `name` must be a string and cannot contain character `/`. "
                             f"Received: name={self.name!r}")
        if not isinstance(trainable, (bool, np.bool_)):
            raise ValueError(f"Expected `trainable` to be a boolean. Received: trainable={trainable!r}")
        _check_dtype(dtype, self.name)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._trainable = bool(trainable)
        self.activity_regularizer = None  # Dense takes one (see activity_penalty)
        self.built = False
        self._inbound_nodes = []  # calls on KerasTensors (functional.Node), in order
        self._init_scratch()
        _fork.register(self)

    def _init_scratch(self):
        pass

    @property
    def trainable(self):
        """Whether the optimizer updates this layer's weights (Keras's; settable)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)

    def _after_fork(self):
        self._init_scratch()

    def __getstate__(self):
        # A built layer's custom initializers have done their work; dropping them lets a
        # model built with lambda initializers pickle (Keras's own initializers stay: they
        # pickle, and get_config writes them).
        return {k: v for k, v in self.__dict__.items()
                if k not in self._scratch and not (self.built and k.endswith("_initializer")
                                                   and not isinstance(v, initializers.Initializer))}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_scratch()
        _fork.register(self)

    def __call__(self, inputs, training=False, mask=None):
        """The layer on arrays, as in Keras: built from the input's shape on first use. On
        KerasTensors (`Input` and what layers made of it) it adds a node to the graph of a
        functional model and returns the output KerasTensor(s) (see functional.py)."""
        if any(isinstance(t, KerasTensor) for t in (inputs if isinstance(inputs, (list, tuple)) else [inputs])):
            from fastlstm import functional  # the graph reads the layers: imported when first used
            return functional.call_symbolic(self, inputs, training, mask)
        if not self.built:
            shape = np.shape(inputs)
            self.output_shape(shape)  # checks the input before any weight is made
            self.build(shape)
        out = self.call(inputs, training=training, mask=mask)
        return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)

    def batch_input_shape(self):
        """The input shape (batch first) known before any data: from `input_shape`, else
        None (the first layer of a Sequential is built from it)."""
        return (None,) + self.input_shape if self.input_shape is not None else None

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output (Keras: None unless a layer makes or passes one)."""
        return None

    def _check_features(self, input_shape):
        """The input's last dimension, needed to build; a clear error when it is unknown."""
        if not self.built and input_shape[-1] is None:
            raise ValueError(f"{self.name} needs its input's last dimension; pass input_shape")

    def _check_ndim(self, input_shape, ndim, what):
        """Keras's input check, before any weight is made from the shape."""
        if len(input_shape) != ndim:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected "
                             f"ndim={ndim} {what}, found ndim={len(input_shape)}; full shape received: "
                             f"{tuple(input_shape)}")

    @property
    def weights(self):
        """All weight arrays, in Keras's order."""
        return []

    def get_config(self):
        """Keras's config of this layer: its constructor's arguments by Keras's names, as
        Keras writes them in a .keras file (initializers as {"class_name", "config"} dicts).
        `type(self).from_config(config)` makes a new, unbuilt layer like it."""
        return {"name": self.name, "trainable": self.trainable, "dtype": _float32_policy()}

    @classmethod
    def from_config(cls, config):
        """A new, unbuilt layer from a get_config() dict, Keras's or fastlstm's. Entries of
        Keras's config that ask for nothing different here (float32 dtype, no regularizer
        or constraint, stateful=False, unroll, ...) are dropped; any other goes to the
        constructor, which rejects what fastlstm does not have, naming it."""
        return cls(**{k: v for k, v in config.items() if not _changes_nothing(k, v)})

    def _initializer_config(self, attr):
        """Keras's config of the initializer in `attr`. A built layer's custom callable
        (dropped when the layer is pickled) is None: Keras's default, as the weights
        themselves are what a file holds; an unbuilt layer's stays the callable."""
        init = getattr(self, attr, None)
        if self.built and not isinstance(init, initializers.Initializer):
            return None
        return initializers.serialize(init)

    @property
    def trainable_weights(self):
        """The weights the optimizer updates: all of them, none when trainable is False."""
        return list(self.weights) if self.trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self.trainable else list(self.weights)

    def get_weights(self):
        """Copies of `weights`."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Assign `weights` from a list of arrays like `get_weights()` (count and shapes
        checked, as Keras's), in place."""
        current = self.weights
        weights = list(weights)
        if len(weights) != len(current):
            raise ValueError(f"You called `set_weights(weights)` on layer '{self.name}' with a weight list of "
                             f"length {len(weights)}, but the layer was expecting {len(current)} weights.")
        new = []
        for w, a in zip(current, weights):
            a = np.asarray(a)
            if a.shape != w.shape:
                raise ValueError(f"Layer {self.name} weight shape {w.shape} is not compatible with provided "
                                 f"weight shape {a.shape}.")
            if a.dtype.kind not in "fiub":
                raise TypeError(f"Layer {self.name}: weights must be numeric, got dtype {a.dtype}")
            new.append(a)
        for w, a in zip(current, new):
            w[...] = a

    # (weight attribute, its regularizer's attribute) pairs of the layer (Dense: kernel, bias)
    _regularized = ()

    def weight_regularizers(self):
        """[(weight array, regularizer), ...] of the trainable weights that have one: the model
        adds each `regularizer(w)` to the loss and `regularizer.gradient(w)` to w's gradient
        (Keras counts trainable weights only)."""
        if not self.trainable or not self.built:
            return []
        pairs = [(getattr(self, w, None), getattr(self, r, None)) for w, r in self._regularized]
        return [(w, r) for w, r in pairs if w is not None and r is not None]

    def activity_penalty(self, outputs):
        """Keras's activity regularization of this layer's output from one call:
        activity_regularizer(outputs) / batch size, or 0.0 without one."""
        if self.activity_regularizer is None:
            return 0.0
        y = np.asarray(outputs, np.float32)
        penalty = np.float32(self.activity_regularizer(y))
        if y.ndim:  # per sample, as Keras (divide_no_nan: an empty batch gives 0)
            penalty = penalty / np.float32(len(y)) if len(y) else np.float32(0)
        return float(penalty)

    def count_params(self):
        return sum(w.size for w in self.weights)

    def add_weight(self, initializer, shape):
        """A new weight array: float32, C-contiguous (the kernels and Adam update it in place),
        always a copy (training must not change an array the initializer handed over)."""
        shape = tuple(int(s) for s in shape)
        initializer = initializers.GlorotUniform() if initializer is None else initializer  # Keras's default
        w = np.array(initializer(shape), dtype=np.float32, order="C", copy=True)
        if w.shape != shape:
            raise ValueError(f"{self.name}: the initializer returned shape {w.shape}, expected {shape}")
        return w


def _float32_policy():
    """The dtype entry of a layer's config, as Keras writes it (fastlstm computes in float32)."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


# Keras config entries that change nothing in fastlstm at these values (from_config drops them)
_NEUTRAL = {"trainable": True, "stateful": False, "sparse": False, "ragged": False, "optional": False,
            "data_format": "channels_last"}


def _changes_nothing(key, value):
    if key == "dtype":
        if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
            value = (value.get("config") or {}).get("name")
        return value in (None, "float32")
    if key == "unroll":
        return isinstance(value, bool)  # an execution strategy of Keras's: the same numbers
    if key.endswith(("_regularizer", "_constraint")) or key in ("quantization_config", "lora_rank", "lora_alpha"):
        return value is None
    return key in _NEUTRAL and _NEUTRAL[key] == value and type(_NEUTRAL[key]) is type(value)


def _serialized(obj):
    """A config value as Keras writes it: None, a name, or an object's config dict."""
    from fastlstm import saving  # saving reads the layers: imported when first used
    return saving.serialize_keras_object(obj)


def _activation_config(activation):
    """Keras's name of an activation (None is "linear")."""
    if activation is None:
        return "linear"
    return activation if isinstance(activation, str) else getattr(activation, "__name__", activation)


def float_input(x, layer_name):
    """x as a numeric array (a clear TypeError for strings or objects)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"the input of {layer_name!r} must hold numbers, got dtype {x.dtype}")
    return x


def _int_ids(x, input_dim):
    """x as an int32 array of ids in [0, input_dim), or a clear error."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        if x.size and (not np.all(np.isfinite(x)) or np.any(x != np.round(x))):
            raise ValueError("Embedding input must hold whole-number token ids (found NaN, inf or fractions)")
    elif x.dtype.kind not in "iub":
        raise TypeError(f"Embedding input must be integer token ids, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"Embedding input must be 2-D (batch, timesteps), got shape {x.shape}")
    if x.size:
        lo, hi = x.min(), x.max()
        if lo < 0 or hi >= input_dim:
            bad = lo if lo < 0 else hi
            raise IndexError(f"token id {int(bad)} is out of range: Embedding(input_dim={input_dim}) "
                             f"takes ids in [0, {input_dim})")
    return np.ascontiguousarray(x, dtype=np.int32)


class Embedding(Layer):
    """Token id -> vector lookup: (B,T) ids -> (B,T,output_dim). Table (input_dim, output_dim).
    mask_zero=True: id 0 is padding, and the output's mask (compute_mask) is ids != 0."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 mask_zero=False, name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None), kwargs.pop("trainable", True))
        kwargs.pop("input_length", None)  # accepted for old Keras code; the length is free
        if kwargs:
            raise TypeError(f"Embedding got unexpected arguments {sorted(kwargs)}")
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{what} must be a positive integer, got {v!r}")
        if input_dim > 2**31:
            raise ValueError(f"input_dim = {input_dim} is too large: token ids are int32, so "
                             "input_dim is at most 2**31")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.mask_zero = bool(mask_zero)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": self._initializer_config("embeddings_initializer"),
                "embeddings_regularizer": _serialized(getattr(self, "embeddings_regularizer", None)),
                "activity_regularizer": _serialized(getattr(self, "activity_regularizer", None)),
                "embeddings_constraint": None, "mask_zero": self.mask_zero, "quantization_config": None}

    _regularized = (("embeddings", "embeddings_regularizer"),)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(self.embeddings_initializer, (self.input_dim, self.output_dim))
        self.built = True

    @property
    def weights(self):
        return [self.embeddings] if self.built else []

    _scratch = ("_ids",)

    def batch_input_shape(self):
        return (None,) + (self.input_shape or (None,))  # token ids (batch, timesteps)

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 2, "(batch, timesteps) token ids")
        return tuple(input_shape[:2]) + (self.output_dim,)

    def compute_mask(self, inputs, mask=None):
        return np.asarray(inputs) != 0 if self.mask_zero else None

    def call(self, x, training=False, mask=None):
        """ids (B,T) -> a TokenSequence (B,T,output_dim), gathered by whoever reads it."""
        ids = _int_ids(x, self.input_dim)
        if training:
            self._ids = ids
        return TokenSequence(self, ids)

    def backward(self, d):
        """d: dL/d(output) (B,T,E), or a TokenRowsGradient -> (None, [d embeddings])."""
        # each row added into its token's (C++: np.add.at's sums, faster)
        rows, values = (d.rows, d.values) if isinstance(d, TokenRowsGradient) else (self._ids.reshape(-1), d)
        g = _core.add_rows_at(self.input_dim, np.asarray(rows, np.int32),
                              np.ascontiguousarray(values, np.float32).reshape(-1, self.output_dim))
        return None, [g]


def _activate(name, z):
    """activations.forward(name, z); a softmax's or sigmoid's output carries its logits z
    (as Keras's `_keras_logits`), so a loss can take them."""
    y = activations.forward(name, z)
    return Output.of(y, z, name) if name in ("softmax", "sigmoid") else y


def _activation_gradient(name, z, y, d, dy_extra=None):
    """dL/dz for y = _activate(name, z): d is dL/dy, or a LogitsGradient (dL/dz already);
    dy_extra: a further dL/dy (an activity regularizer's), or None."""
    if isinstance(d, LogitsGradient):
        dz = d.values
        return dz if dy_extra is None else dz + activations.backward(name, z, np.asarray(y), dy_extra)
    dy = np.asarray(d, np.float32)
    return activations.backward(name, z, np.asarray(y), dy if dy_extra is None else dy + dy_extra)


class Dense(Layer):
    """y = activation(x @ kernel + bias); kernel (in, units), bias (units). activation: any
    of Keras's names or fastlstm.activations functions (see activations.py)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None), kwargs.pop("trainable", True),
                         input_dim=kwargs.pop("input_dim", None))
        if kwargs:
            raise TypeError(f"Dense got unexpected arguments {sorted(kwargs)}")
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units, self.activation, self.use_bias = int(units), activations.serialize(activation), use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)

    _regularized = (("kernel", "kernel_regularizer"), ("bias", "bias_regularizer"))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": _activation_config(self.activation),
                "use_bias": self.use_bias, "kernel_initializer": self._initializer_config("kernel_initializer"),
                "bias_initializer": self._initializer_config("bias_initializer"),
                "kernel_regularizer": _serialized(getattr(self, "kernel_regularizer", None)),
                "bias_regularizer": _serialized(getattr(self, "bias_regularizer", None)),
                "kernel_constraint": None, "bias_constraint": None, "quantization_config": None}

    def build(self, input_shape):
        self._check_features(input_shape)
        self.kernel = self.add_weight(self.kernel_initializer, (int(input_shape[-1]), self.units))
        self.bias = self.add_weight(self.bias_initializer, (self.units,)) if self.use_bias else None
        self.built = True

    @property
    def weights(self):
        if not self.built:
            return []
        return [self.kernel, self.bias] if self.use_bias else [self.kernel]

    _scratch = ("_x", "_z", "_y")

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            self._check_ndim(input_shape, 2, "(batch, ..., features)")
        self._check_features(input_shape)
        return tuple(input_shape[:-1]) + (self.units,)

    def _bias(self):
        return self.bias if self.use_bias else np.zeros(self.units, np.float32)

    def compute_mask(self, inputs, mask=None):
        return mask  # as Keras's Dense: the mask passes through

    def logits(self, x):
        """x @ kernel + bias over the last axis, in the C++ kernel (numpy's BLAS threads
        would spin against the LSTM's)."""
        x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        return _core.affine(x2, self.kernel, self._bias()).reshape(x.shape[:-1] + (self.units,))

    def call(self, x, training=False, mask=None):
        """x (..., in) -> (..., units); a softmax's or sigmoid's output carries its logits."""
        x = float_input(x, self.name)
        z = self.logits(x)
        y = _activate(self.activation, z)
        if training:
            self._x, self._z, self._y = x, z, y
        return y

    def backward(self, d):
        """d: dL/d(output), or a LogitsGradient when the loss took the logits. An activity
        regularizer adds the gradient of its penalty (activity_penalty) to dL/d(output)."""
        dy_extra = None
        if self.activity_regularizer is not None:
            y = np.asarray(self._y, np.float32)
            dy_extra = self.activity_regularizer.gradient(y) / np.float32(len(y))
        dz = _activation_gradient(self.activation, self._z, self._y, d, dy_extra)
        x2 = np.ascontiguousarray(self._x.reshape(-1, self._x.shape[-1]), dtype=np.float32)
        dz2 = np.ascontiguousarray(dz.reshape(-1, self.units), dtype=np.float32)
        dx, dkernel, dbias = _core.affine_backward(x2, self.kernel, dz2)
        return dx.reshape(self._x.shape), [dkernel] + ([dbias] if self.use_bias else [])


class Masking(Layer):
    """Keras's Masking: a time step whose features all equal mask_value is masked (the mask
    goes to the next layers, compute_mask) and zeroed. (B,T,F) -> (B,T,F)."""

    def __init__(self, mask_value=0.0, name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None), kwargs.pop("trainable", True))
        if kwargs:
            raise TypeError(f"Masking got unexpected arguments {sorted(kwargs)}")
        self.mask_value = mask_value

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}

    def build(self, input_shape=None):
        self.built = True

    _scratch = ("_mask",)

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 3, "(batch, timesteps, features)")
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return np.any(np.asarray(inputs) != self.mask_value, axis=-1)

    def call(self, x, training=False, mask=None):
        x = np.asarray(float_input(x, self.name))
        self._check_ndim(x.shape, 3, "(batch, timesteps, features)")
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True)
        if training:
            self._mask = keep
        return np.where(keep, x, 0).astype(np.result_type(x, np.float32), copy=False)

    def backward(self, d):
        return np.where(self._mask, np.asarray(d), 0).astype(np.float32, copy=False), []


def _time_mask(mask, batch, name):
    """A layer's input mask as a C-contiguous bool (B,T), or None; a clear error otherwise."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(batch):
        raise ValueError(f"{name}: the mask must have shape (batch, timesteps) = {tuple(batch)}, got {m.shape}")
    return np.ascontiguousarray(m, dtype=bool)


# What the kernels' cells implement (csrc/cells.h), by Keras's names.
_RECURRENT_ACTIVATIONS = ("tanh", "relu", "linear")
_GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


def _positive_units(units):
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")
    return int(units)


class _Recurrent(Layer):
    """What LSTM, GRU and SimpleRNN share: one C++ engine over a cell (`_cell`, with `_gates`
    gates per unit and `_states` state arrays), on dense input or fused with an Embedding.

    kernel (E,G*H), recurrent_kernel (H,G*H), bias (see the subclass). Output: the last hidden
    state (B,H), or every hidden state (B,T,H) with return_sequences=True; with
    return_state=True, the list [output, *final states]. go_backwards=True runs over the
    time-reversed input and returns the sequence in that order, as Keras does.
    """
    _cell, _gates, _states = None, None, ("h",)

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", return_sequences=False, return_state=False,
                 go_backwards=False, dropout=0.0, recurrent_dropout=0.0, seed=None, name=None,
                 zero_output_for_mask=False, kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None), kwargs.pop("trainable", True))
        # Keras's: implementation 1 (a dropout mask per gate) whenever recurrent_dropout > 0
        implementation = kwargs.pop("implementation", 2) if self._gates > 1 else 2
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        self.units, self.use_bias = _positive_units(units), bool(use_bias)
        for what, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or rate != rate:
                raise ValueError(f"{what} must be a number in [0, 1], got {rate!r}")
        # Keras clips the rates to [0, 1]; see _drops for when it applies them
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        if implementation not in (1, 2):
            raise ValueError(f"implementation must be 1 or 2, got {implementation!r}")
        self.implementation = 1 if self.recurrent_dropout != 0.0 else implementation
        self.seed = seed
        self._dropout_rng = np.random.default_rng(seed) if seed is not None else None
        activation = "linear" if activation is None else activation
        if activation not in _RECURRENT_ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activation must be one of {_RECURRENT_ACTIVATIONS} "
                             f"(or None, linear), got {activation!r}")
        if recurrent_activation not in _GATE_ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: recurrent_activation must be one of {_GATE_ACTIVATIONS}, "
                             f"got {recurrent_activation!r}")
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.return_sequences = bool(return_sequences)
        self.return_state, self.go_backwards = bool(return_state), bool(go_backwards)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    _regularized = (("kernel", "kernel_regularizer"), ("recurrent_kernel", "recurrent_regularizer"),
                    ("bias", "bias_regularizer"))

    _scratch = ("_workspace", "_inference", "_mode", "_x", "_used", "_emb_used", "_batch", "_zeroed",
                "_x_masks", "_sample_rows")

    def _init_scratch(self):
        self._workspace = _core.Workspace()  # training: activations kept for backward, reused
        self._inference = threading.local()  # inference: one reused workspace per thread
        self._zeroed = None                  # zero_output_for_mask: the output's mask

    def build(self, input_shape):
        self._check_features(input_shape)
        GH = self._gates * self.units
        self.kernel = self.add_weight(self.kernel_initializer, (int(input_shape[-1]), GH))
        self.recurrent_kernel = self.add_weight(self.recurrent_initializer, (self.units, GH))
        self.bias = self._build_bias() if self.use_bias else None
        self.built = True

    def get_config(self):
        """Keras's RNN config (as Keras, `implementation` is not in it)."""
        config = {**super().get_config(), "return_sequences": self.return_sequences,
                  "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": False,
                  "unroll": False, "zero_output_for_mask": self.zero_output_for_mask, "units": self.units,
                  "activation": _activation_config(self.activation)}
        if self._gates > 1:
            config["recurrent_activation"] = _activation_config(self.recurrent_activation)
        config["use_bias"] = self.use_bias
        for kind in ("kernel", "recurrent", "bias"):
            config[f"{kind}_initializer"] = self._initializer_config(f"{kind}_initializer")
        for kind in ("kernel", "recurrent", "bias", "activity"):
            config[f"{kind}_regularizer"] = _serialized(getattr(self, f"{kind}_regularizer", None))
        for kind in ("kernel", "recurrent", "bias"):
            config[f"{kind}_constraint"] = None
        return {**config, "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout, "seed": self.seed}

    def _build_bias(self):
        return self.add_weight(self.bias_initializer, (self._gates * self.units,))

    def _biases(self):
        """(input bias (G*H,), recurrent bias (G*H,) or None) for the kernels."""
        return (self.bias if self.use_bias else np.zeros(self._gates * self.units, np.float32)), None

    def _bias_gradient(self, dbias, drecurrent_bias):
        return dbias

    @property
    def weights(self):
        if not self.built:
            return []
        w = [self.kernel, self.recurrent_kernel]
        return w + [self.bias] if self.use_bias else w

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 3, "(batch, timesteps, features)")
        self._check_features(input_shape)
        B, T = input_shape[0], input_shape[1]
        out = (B, T, self.units) if self.return_sequences else (B, self.units)
        return [out] + [(B, self.units)] * len(self._states) if self.return_state else out

    def _workspace_for(self, training):
        if training:
            return self._workspace
        if not hasattr(self._inference, "workspace"):
            self._inference.workspace = _core.Workspace()
        return self._inference.workspace

    def _check_width(self, shape):
        """The input's features (B,T,E) are the E the layer was built for."""
        if shape[2] != self.kernel.shape[0]:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected "
                             f"shape=(None, None, {self.kernel.shape[0]}), found shape={shape}")

    def compute_mask(self, inputs, mask=None):
        """Keras's: the input mask goes on with the sequence, not with the last output."""
        out = mask if self.return_sequences else None
        return [out] + [None] * len(self._states) if self.return_state else out

    def _outputs(self, result, mask, training):
        """The kernels' (h_last, h_seq or None, c_last or None) as the layer's output(s).
        mask (B,T) in the order the steps were taken, or None: with zero_output_for_mask the
        output is zero at masked steps (the states are not)."""
        h_last, h_seq, c_last = result
        out = h_seq if self.return_sequences else h_last
        zeroed = mask if mask is not None and self.zero_output_for_mask else None
        if zeroed is not None:
            zeroed = zeroed[..., None] if self.return_sequences else zeroed[:, -1:]
            out = np.where(zeroed, out, np.float32(0))
        if training:
            self._zeroed = zeroed
        if not self.return_state:
            return out
        return [out, h_last, c_last] if len(self._states) == 2 else [out, h_last]

    def _dropout_masks(self, B, E):
        """Keras's dropout keep-masks for one call (training): (input masks (B,Gd,E) or None,
        recurrent masks (B,G,H) or None), each 0 or 1/(1-rate), one per sample for every
        step; Gd = G (a mask per gate) with implementation 1, else 1. Drawn from the layer's
        seeded generator (seed=...), else fastlstm's (utils.set_random_seed)."""
        gen = self._dropout_rng or utils.rng()

        def keep(rate, shape):
            if rate >= 1:  # everything dropped (SimpleRNN's rate 1.0)
                return np.zeros(shape, np.float32)
            return np.where(gen.random(shape) >= rate, np.float32(1) / np.float32(1 - rate),
                            np.float32(0)).astype(np.float32)

        G = self._gates if self.implementation == 1 else 1
        x_masks = keep(self.dropout, (B, G, E)) if self._drops(self.dropout) else None
        h_masks = keep(self.recurrent_dropout, (B, self._gates, self.units)) if self._drops(self.recurrent_dropout) else None
        return x_masks, h_masks

    def _drops(self, rate):
        """Whether Keras's cell applies a dropout mask of this rate: LSTM and GRU for
        0 < rate < 1, SimpleRNN for any rate > 0 (1.0 drops everything)."""
        return 0 < rate < 1 or (self._gates == 1 and rate == 1)

    def _steps_mask(self, mask, batch):
        """The input mask in the order the steps are taken (reversed with go_backwards)."""
        mask = _time_mask(mask, batch, self.name)
        return np.ascontiguousarray(mask[:, ::-1]) if mask is not None and self.go_backwards else mask

    def call(self, x, training=False, mask=None):
        """x (B,T,E) float, or a TokenSequence -> (B,H) or (B,T,H) (and the states).
        mask (B,T) bool or None: a masked step keeps the state, as in Keras. With training,
        dropout and recurrent_dropout draw their masks (Keras's semantics); inference never
        drops."""
        x_masks, h_masks = self._dropout_masks(len(x), self.kernel.shape[0]) if training else (None, None)
        if isinstance(x, TokenSequence):
            return self._call_on_tokens(x, training, mask, x_masks, h_masks)
        x = float_input(x, self.name)
        self._check_ndim(x.shape, 3, "(batch, timesteps, features)")
        self._check_width(x.shape)
        mask = self._steps_mask(mask, x.shape[:2])
        x = np.ascontiguousarray(x[:, ::-1] if self.go_backwards else x, dtype=np.float32)
        bias, recurrent_bias = self._biases()
        common = dict(self._cell_args(), recurrent_bias=recurrent_bias, return_sequences=self.return_sequences,
                      workspace=self._workspace_for(training), training=training, return_state=True,
                      mask=mask, recurrent_dropout_mask=h_masks)
        if x_masks is not None:  # each sample's kernel ⊙ its masks (one per gate, or one for all)
            B, T, E = x.shape
            table = _core.affine_masked(x.reshape(B * T, E), self.kernel, bias, x_masks, _sample_rows(B, T))
            out = _core.rnn_forward_projected(table.reshape(B, T, self.kernel.shape[1]), self.recurrent_kernel, **common)
            mode = "projected"
        else:
            out = _core.rnn_forward(x, self.kernel, self.recurrent_kernel, bias, **common)
            mode = "dense"
        if training:
            self._mode, self._x, self._batch, self._x_masks = mode, x, x.shape[:2], x_masks
        return self._outputs(out, mask, training)

    def _cell_args(self):
        """The kernels' cell: its name and activations."""
        return dict(cell=self._cell, activation=self.activation, recurrent_activation=self.recurrent_activation)

    def _call_on_tokens(self, tokens, training, mask, x_masks=None, h_masks=None):
        """The layer on an Embedding's output without gathering it (B,T,E): the embedding
        rows in use are projected once, (U,E) @ kernel -> (U,G*H), and the kernel gathers
        rows of that table. With input dropout (x_masks) a sample's inputs are its own: the
        table holds each sample's distinct tokens, projected with its masks."""
        embedding, ids = tokens.embedding, tokens.ids
        self._check_width(tokens.shape)
        mask = self._steps_mask(mask, ids.shape)
        if self.go_backwards:
            ids = ids[:, ::-1]
        bias, recurrent_bias = self._biases()
        if x_masks is None:
            V = embedding.input_dim
            present = np.zeros(V, bool)
            present[ids] = True
            used = np.flatnonzero(present)              # (U,) token ids in this batch
            remap = np.zeros(V, np.int32)
            remap[used] = np.arange(used.size, dtype=np.int32)
            rows = remap[ids]                           # (B,T) rows of the projected table
            emb_used = embedding.embeddings[used]       # (U,E)
            table = _core.affine(emb_used, self.kernel, bias)
            # Without a mask, leading padding (id 0) is skipped exactly (a shared trajectory).
            pad_row = int(remap[0]) if present[0] and mask is None else -1
            sample_rows = None
        else:
            used, rows, sample_rows = _tokens_per_sample(ids)
            emb_used = embedding.embeddings[used]       # (U,E)
            table = _core.affine_masked(emb_used, self.kernel, bias, x_masks, sample_rows)
            pad_row = -1                                # each sample's padding is its own
        out = _core.rnn_forward_tokens(rows, table, self.recurrent_kernel, pad_row,
                                       recurrent_bias=recurrent_bias, return_sequences=self.return_sequences,
                                       workspace=self._workspace_for(training), training=training,
                                       return_state=True, mask=mask, recurrent_dropout_mask=h_masks,
                                       **self._cell_args())
        if training:
            self._mode, self._used, self._emb_used, self._batch = "tokens", used, emb_used, ids.shape
            self._x_masks, self._sample_rows = x_masks, sample_rows
        return self._outputs(out, mask, training)

    def backward(self, d):
        """d = dL/d(output) (B,H) or (B,T,H); with return_state, [d output, d h(, d c)] (None
        for an output that took no gradient) -> (d input, gradients in the order of weights);
        d input is (B,T,E), or a TokenRowsGradient after a TokenSequence input."""
        n = 1 + len(self._states)
        if self.return_state:
            if not isinstance(d, (list, tuple)) or len(d) != n:
                raise ValueError(f"{self.name} has return_state=True: backward takes [d output, "
                                 f"{', '.join('d ' + s for s in self._states)}] (None where an output "
                                 "took no gradient)")
            d_out, d_h, d_c = (list(d) + [None])[:3]
        else:
            d_out, d_h, d_c = d, None, None
        (B, T), H = self._batch, self.units
        state = (B, H)

        def grad(a, shape, what):  # float32 C-contiguous of exactly `shape`, or None
            if a is None:
                return None
            a = np.ascontiguousarray(a, dtype=np.float32)
            if a.shape != shape:
                raise ValueError(f"{self.name}: the gradient of {what} must have shape {shape}, got {a.shape}")
            return a

        d_out = grad(d_out, (B, T, H) if self.return_sequences else state, "the output")
        if d_out is not None and self._zeroed is not None:
            d_out = np.ascontiguousarray(np.where(self._zeroed, d_out, np.float32(0)))
        d_h, d_c = grad(d_h, state, "the state h"), grad(d_c, state, "the state c")
        dh_seq = d_out if self.return_sequences else None
        dh_last = d_out if not self.return_sequences and d_out is not None else np.zeros(state, np.float32)
        if d_h is not None:
            dh_last = dh_last + d_h
        need_rb = self._biases()[1] is not None
        if self._mode == "dense":
            dx, dk, dr, db, *drb = _core.rnn_backward(self._workspace, self._x, self.kernel,
                                                      self.recurrent_kernel, dh_last, dh_seq, d_c, need_rb)
        elif self._mode == "projected":
            dtable, dr, *drb = _core.rnn_backward_table(self._workspace, self.recurrent_kernel, dh_last,
                                                        dh_seq, d_c, need_rb)
            dx, dk, db = _core.affine_masked_backward(self._x.reshape(B * T, self._x.shape[2]), self.kernel,
                                                      self._x_masks, dtable.reshape(B * T, dtable.shape[2]),
                                                      _sample_rows(B, T))
            dx = dx.reshape(self._x.shape)
        if self._mode != "tokens":
            if self.go_backwards:
                dx = np.ascontiguousarray(dx[:, ::-1])  # back to the input's order
        else:
            dtable, dr, *drb = _core.rnn_backward_table(self._workspace, self.recurrent_kernel, dh_last,
                                                         dh_seq, d_c, need_rb)
            if self._x_masks is None:
                demb_used, dk, db = _core.affine_backward(self._emb_used, self.kernel, dtable)
            else:
                demb_used, dk, db = _core.affine_masked_backward(self._emb_used, self.kernel, self._x_masks,
                                                                 dtable, self._sample_rows)
            dx = TokenRowsGradient(self._used, demb_used)
        grads = [dk, dr] + ([self._bias_gradient(db, drb[0] if drb else None)] if self.use_bias else [])
        return dx, grads


class LSTM(_Recurrent):
    """Keras's LSTM (gates i,f,c,o; zero initial state) on the fastlstm C++ kernels.

    kernel (E,4H), recurrent_kernel (H,4H), bias (4H). Output: the last hidden state (B,H),
    or every hidden state (B,T,H) with return_sequences=True; with return_state=True, the
    list [output, h (B,H), c (B,H)] (the final states). go_backwards=True runs over the
    time-reversed input and returns the sequence in that order, as Keras does.
    """
    _cell, _gates, _states = "lstm", 4, ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, dropout=0.0, recurrent_dropout=0.0,
                 seed=None, return_sequences=False, return_state=False, go_backwards=False, name=None,
                 **kwargs):
        super().__init__(units, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, return_sequences, return_state,
                         go_backwards, dropout, recurrent_dropout, seed, name, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer, **kwargs)
        self.unit_forget_bias = unit_forget_bias

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}

    def _build_bias(self):
        bias = super()._build_bias()
        if self.unit_forget_bias:
            bias[self.units:2 * self.units] = 1.0
        return bias


class GRU(_Recurrent):
    """Keras's GRU (gates z, r, h; zero initial state) on the C++ kernels.

    reset_after=True (Keras's default): the reset gate multiplies h_prev @ recurrent_kernel +
    recurrent bias; bias (2,3H), row 0 the input bias, row 1 the recurrent bias.
    reset_after=False: the candidate reads (r * h_prev) @ recurrent_kernel; bias (3H,).
    kernel (E,3H), recurrent_kernel (H,3H). return_state=True gives [output, h (B,H)].
    """
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, reset_after=True,
                 name=None, **kwargs):
        super().__init__(units, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, return_sequences, return_state,
                         go_backwards, dropout, recurrent_dropout, seed, name, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer, **kwargs)
        self.reset_after = bool(reset_after)
        self._cell = "gru" if self.reset_after else "gru_reset_before"

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}

    def _build_bias(self):
        return self.add_weight(self.bias_initializer, (2, 3 * self.units) if self.reset_after else (3 * self.units,))

    def _biases(self):
        if not self.use_bias:
            return np.zeros(3 * self.units, np.float32), None
        if not self.reset_after:
            return self.bias, None
        return self.bias[0], self.bias[1]  # rows of a C-contiguous array: contiguous

    def _bias_gradient(self, dbias, drecurrent_bias):
        return np.stack([dbias, drecurrent_bias]) if self.reset_after else dbias


class SimpleRNN(_Recurrent):
    """Keras's SimpleRNN: h = tanh(x @ kernel + bias + h_prev @ recurrent_kernel), zero
    initial state. kernel (E,H), recurrent_kernel (H,H), bias (H). return_state=True gives
    [output, h (B,H)]."""
    _cell, _gates = "simple_rnn", 1

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, name=None, **kwargs):
        super().__init__(units, activation, "sigmoid", use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, return_sequences, return_state,
                         go_backwards, dropout, recurrent_dropout, seed, name, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["seed"]  # as Keras's SimpleRNN: its config has no seed
        return config


def _sample_rows(B, T):
    """affine_masked's sample_rows for B samples of T rows each: (B+1,) int32."""
    return (np.arange(B + 1, dtype=np.int64) * T).astype(np.int32)  # B*T < 2**31: x's rows are checked first


def _tokens_per_sample(ids):
    """Each sample's distinct tokens of ids (B,T): (tokens (U,) int32 sample by sample, rows
    (B,T) int32 of them, sample_rows (B+1,) int32: sample b's are [sample_rows[b],
    sample_rows[b+1]))."""
    B, T = ids.shape
    if T == 0:
        return np.zeros(0, np.int32), np.zeros((B, 0), np.int32), np.zeros(B + 1, np.int32)
    order = np.argsort(ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, order, axis=1)
    first = np.ones((B, T), bool)            # the first of each run of a token in a sorted row
    first[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    tokens = sorted_ids[first]               # (U,) row by row, ascending within a row
    counts = first.sum(axis=1)
    sample_rows = np.zeros(B + 1, np.int32)
    np.cumsum(counts, out=sample_rows[1:])
    # row of (b, id): sample_rows[b] + the rank of id among row b's distinct tokens
    rank = np.cumsum(first, axis=1) - 1      # (B,T) ranks, in sorted order
    rows = np.empty((B, T), np.int32)
    np.put_along_axis(rows, order, (rank + sample_rows[:B, None]).astype(np.int32), axis=1)
    return tokens.astype(np.int32), rows, sample_rows


def _add_input_gradients(a, b, inputs=None):
    """The sum of two layers' gradients of the same input: arrays, or TokenRowsGradients (of
    a TokenSequence `inputs`); otherwise one TokenRowsGradient holding both's rows (an
    array's: one per position of `inputs`), which the Embedding adds up."""
    tokens_a, tokens_b = isinstance(a, TokenRowsGradient), isinstance(b, TokenRowsGradient)
    if not tokens_a and not tokens_b:
        return a + b
    if tokens_a and tokens_b and np.array_equal(a.rows, b.rows):
        return TokenRowsGradient(a.rows, a.values + b.values)
    if not (tokens_a and tokens_b) and not isinstance(inputs, TokenSequence):
        raise TypeError("gradients of a token sequence need the TokenSequence they belong to")
    parts = [g if isinstance(g, TokenRowsGradient) else
             TokenRowsGradient(inputs.ids.reshape(-1), np.asarray(g, np.float32).reshape(-1, inputs.shape[-1]))
             for g in (a, b)]
    return TokenRowsGradient(np.concatenate([np.asarray(g.rows, np.int32) for g in parts]),
                             np.concatenate([np.asarray(g.values, np.float32) for g in parts]))


class Bidirectional(Layer):
    """Keras's Bidirectional: a recurrent layer run forwards and, as a copy with
    go_backwards=True (or `backward_layer`), backwards over the same input (and mask); the
    backward output sequence is re-aligned in time, then the two are merged: "concat" (last
    axis), "sum", "mul", "ave", or None ([forward output, backward output]). Weights: the
    forward layer's, then the backward layer's. With return_state: [output(s), *forward
    states, *backward states]. As in Keras, both layers zero their output at masked steps
    when they return sequences."""
    _MERGES = ("concat", "sum", "mul", "ave", None)

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None), kwargs.pop("trainable", True))
        if kwargs:
            raise TypeError(f"Bidirectional got unexpected arguments {sorted(kwargs)}")
        if not isinstance(layer, _Recurrent):
            raise ValueError(f"Bidirectional wraps a recurrent layer (LSTM, GRU, SimpleRNN), got {type(layer).__name__}")
        if backward_layer is not None and not isinstance(backward_layer, _Recurrent):
            raise ValueError(f"backward_layer must be a recurrent layer, got {type(backward_layer).__name__}")
        if merge_mode not in self._MERGES:
            raise ValueError(f"Invalid merge mode {merge_mode!r}; one of {self._MERGES}")
        config = layer.get_config()  # as Keras: new layers from the given one's config
        self.forward_layer = type(layer).from_config({**config, "name": "forward_" + layer.name.removeprefix("forward_")})
        if backward_layer is None:
            backward_layer = type(layer).from_config({**config, "go_backwards": True,
                                                      "name": "backward_" + layer.name.removeprefix("backward_")})
        self.backward_layer = backward_layer
        fwd, bwd = self.forward_layer, self.backward_layer
        if fwd.go_backwards == bwd.go_backwards:
            raise ValueError("Forward layer and backward layer should have different `go_backwards` values")
        for a in ("return_sequences", "return_state"):
            if getattr(fwd, a) != getattr(bwd, a):
                raise ValueError(f"Forward layer and backward layer are expected to have the same value for "
                                 f"{a!r}, got {getattr(fwd, a)} and {getattr(bwd, a)}")
        for sub in (fwd, bwd):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode, self._initial_weights = merge_mode, weights
        self.return_sequences, self.return_state = fwd.return_sequences, fwd.return_state
        if not self.trainable:
            self.trainable = False  # frozen: both layers (Keras would still train them, see README)

    @Layer.trainable.setter
    def trainable(self, value):
        """As Keras's: both layers follow."""
        self._trainable = bool(value)
        for sub in (self.forward_layer, self.backward_layer):
            sub.trainable = value

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return self.forward_layer.trainable_weights + self.backward_layer.trainable_weights

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        return self.forward_layer.non_trainable_weights + self.backward_layer.non_trainable_weights

    def weight_regularizers(self):
        if not self.trainable:
            return []
        return self.forward_layer.weight_regularizers() + self.backward_layer.weight_regularizers()

    _scratch = ("_y", "_y_rev")

    def get_config(self):
        return {**super().get_config(), "merge_mode": self.merge_mode, "layer": _serialized(self.forward_layer),
                "backward_layer": _serialized(self.backward_layer)}

    @classmethod
    def from_config(cls, config):
        from fastlstm import saving
        config = dict(config)
        config["layer"] = saving.deserialize_layer(config["layer"])
        if config.get("backward_layer") is not None:
            config["backward_layer"] = saving.deserialize_layer(config["backward_layer"])
        return super().from_config(config)

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(input_shape)
        if self._initial_weights is not None:
            for w, v in zip(self.weights, self._initial_weights, strict=True):
                w[...] = v
            self._initial_weights = None
        self.built = True

    @property
    def weights(self):
        return self.forward_layer.weights + self.backward_layer.weights

    def batch_input_shape(self):
        return super().batch_input_shape() or self.forward_layer.batch_input_shape()

    def output_shape(self, input_shape):
        out = self.forward_layer.output_shape(input_shape)
        b_out = self.backward_layer.output_shape(input_shape)
        states = []
        if self.return_state:
            (out, *states), (b_out, *b_states) = out, b_out
            states += b_states
        if self.merge_mode == "concat":
            out = out[:-1] + (out[-1] + b_out[-1],)
        elif self.merge_mode is None:
            out = [out, b_out]
        elif out != b_out:
            raise ValueError(f"merge_mode={self.merge_mode!r} needs outputs of the same shape, got {out} and {b_out}")
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states
        return out

    def compute_mask(self, inputs, mask=None):
        out = mask if self.return_sequences else None
        out = [out, out] if self.merge_mode is None else out
        if self.return_state:
            n = len(self.forward_layer._states) + len(self.backward_layer._states)
            return (out if isinstance(out, list) else [out]) + [None] * n
        return out

    def call(self, x, training=False, mask=None):
        y = self.forward_layer.call(x, training=training, mask=mask)
        y_rev = self.backward_layer.call(x, training=training, mask=mask)
        states = []
        if self.return_state:
            (y, *states), (y_rev, *b_states) = y, y_rev
            states += b_states
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]
        if training:
            self._y, self._y_rev = y, y_rev
        if self.merge_mode == "concat":
            out = np.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = y + y_rev
        elif self.merge_mode == "ave":
            out = (y + y_rev) / np.float32(2)
        elif self.merge_mode == "mul":
            out = y * y_rev
        else:
            out = [y, y_rev]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states
        return out

    def backward(self, d):
        """d = dL/d(output) (a list [d forward, d backward] for merge_mode=None; with
        return_state, followed by a gradient or None per state) -> (d input, gradients)."""
        fwd, bwd = self.forward_layer, self.backward_layer
        n_out = 2 if self.merge_mode is None else 1
        n = n_out + (len(fwd._states) + len(bwd._states) if self.return_state else 0)
        if n > 1 and (not isinstance(d, (list, tuple)) or len(d) != n):
            raise ValueError(f"{self.name}: backward takes a list of {n} gradients (outputs, then states)")
        d = list(d) if n > 1 else [d]
        d_out, d_states = d[:n_out], d[n_out:]
        if self.merge_mode is None:
            d_y, d_rev = d_out
        else:
            g = np.asarray(d_out[0], np.float32)
            if self.merge_mode == "concat":
                H = fwd.units
                d_y, d_rev = g[..., :H], g[..., H:]
            elif self.merge_mode == "sum":
                d_y, d_rev = g, g
            elif self.merge_mode == "ave":
                d_y = d_rev = g / np.float32(2)
            else:
                d_y, d_rev = g * self._y_rev, g * self._y
        if self.return_sequences and d_rev is not None:
            d_rev = np.asarray(d_rev)[:, ::-1]
        k = len(fwd._states)
        d_f = [d_y] + d_states[:k] if self.return_state else d_y
        d_b = [d_rev] + d_states[k:] if self.return_state else d_rev
        d_in_f, g_f = fwd.backward(d_f)
        d_in_b, g_b = bwd.backward(d_b)
        return _add_input_gradients(d_in_f, d_in_b), g_f + g_b


# ---- layers around the recurrent ones ---------------------------------------------------

def _warn_mask_dropped(layer, mask):
    """Keras's warning when a layer that does not support masking gets a mask (it drops it)."""
    if mask is not None:
        warnings.warn(f"Layer '{layer.name}' (of type {type(layer).__name__}) was passed an input with a mask "
                      "attached to it. However, this layer does not support masking and will therefore destroy "
                      "the mask information. Downstream layers will not see the mask.", stacklevel=3)


def _data_format(data_format):
    data_format = "channels_last" if data_format is None else str(data_format).lower()
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError("The `data_format` argument must be one of {'channels_first', 'channels_last'}. "
                         f"Received: data_format={data_format}")
    return data_format


def _float32_input(x, name):
    """x (an array, or a TokenSequence gathered) as a float32 array."""
    return np.asarray(float_input(x, name), dtype=np.float32)


class _Weightless(Layer):
    """A layer without weights, built at construction (Keras's `_build_at_init`): the shape
    and the mask pass unchanged unless the subclass says otherwise."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask


class Dropout(_Weightless):
    """Keras's Dropout: in training, each element is zeroed with probability `rate` and the
    others are scaled by 1 / (1 - rate); at inference the input passes unchanged (an
    Embedding's TokenSequence too, so a following recurrent layer still reads table rows).
    noise_shape (None entries: the input's) broadcasts one draw over the axes where it is 1.
    The mask passes through. Draws come from the layer's generator (seed), else fastlstm's
    (utils.set_random_seed)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not 0 <= rate <= 1:
            raise ValueError("Invalid value received for argument `rate`. Expected a float value between 0 and 1. "
                             f"Received: rate={rate}")
        self.rate, self.seed = rate, seed
        self.noise_shape = self._validate_noise_shape(noise_shape)
        self._dropout_rng = np.random.default_rng(seed) if seed is not None else None

    @staticmethod
    def _validate_noise_shape(noise_shape):
        if noise_shape is None:
            return None
        if isinstance(noise_shape, str) or not hasattr(noise_shape, "__iter__"):
            raise ValueError("Invalid value received for argument `noise_shape`. Expected a tuple or list of "
                             f"integers. Received: noise_shape={noise_shape}")
        noise_shape = tuple(noise_shape)
        for i, dim in enumerate(noise_shape):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0):
                raise ValueError("Invalid value received for argument `noise_shape`. Expected all elements to be "
                                 f"positive integers or None. Received element at index {i}: {dim!r}")
        return tuple(None if d is None else int(d) for d in noise_shape)

    _scratch = ("_keep",)

    def _init_scratch(self):
        self._keep = None  # the last training call's keep-mask (input's shape), None: nothing dropped

    def _noise_shape(self, shape):
        """The shape of one call's draw: noise_shape with the input's sizes for None."""
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape) or any(n not in (None, 1, s) for n, s in zip(self.noise_shape, shape)):
            raise ValueError(f"{self.name}: noise_shape={self.noise_shape} does not broadcast to the input's "
                             f"shape {shape}")
        return tuple(s if n is None else n for n, s in zip(self.noise_shape, shape))

    def _keep_mask(self, shape):
        """Which elements of a draw of `shape` are kept (bool): each with probability 1 - rate."""
        return (self._dropout_rng or utils.rng()).random(shape) >= self.rate

    def _scaled(self, a):
        """a where kept, scaled by 1 / (1 - rate) (Keras's inputs / keep_prob); 0 elsewhere."""
        keep_prob = np.float32(1 - self.rate)
        if keep_prob == 0:
            return np.zeros(a.shape, np.float32)
        return np.where(self._keep, a / keep_prob, np.float32(0))

    def call(self, x, training=False, mask=None):
        if not training or self.rate == 0:
            if training:
                self._keep = None
            return x
        x = _float32_input(x, self.name)
        self._keep = np.broadcast_to(self._keep_mask(self._noise_shape(x.shape)), x.shape)
        return self._scaled(x)

    def backward(self, d):
        if self._keep is None:
            return d, []
        return self._scaled(np.asarray(d, np.float32)), []

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}


class SpatialDropout1D(Dropout):
    """Keras's SpatialDropout1D: Dropout of whole channels, (B,T,C) with one draw per sample
    and channel for all time steps (noise shape (B,1,C))."""

    def __init__(self, rate, seed=None, name=None, dtype=None):
        super().__init__(rate, seed=seed, name=name, dtype=dtype)

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 3, "(batch, timesteps, channels)")
        return tuple(input_shape)

    def _noise_shape(self, shape):
        self._check_ndim(shape, 3, "(batch, timesteps, channels)")
        return (shape[0], 1, shape[2])

    def get_config(self):
        return {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": "float32"}  # Keras's keys


class _GlobalPooling1D(_Weightless):
    """What GlobalMaxPooling1D and GlobalAveragePooling1D share: (B,T,C) (channels_last) or
    (B,C,T) (channels_first) -> (B,C), or with keepdims (B,1,C) / (B,C,1). The math runs on
    the (B,T,C) view."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format, self.keepdims = _data_format(data_format), keepdims

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 3, "(batch, steps, features)")
        B = input_shape[0]
        C = input_shape[2] if self.data_format == "channels_last" else input_shape[1]
        if not self.keepdims:
            return (B, C)
        return (B, 1, C) if self.data_format == "channels_last" else (B, C, 1)

    def compute_mask(self, inputs, mask=None):
        return None

    def _steps_view(self, x):
        """x as (B,T,C) float32."""
        x = _float32_input(x, self.name)
        self._check_ndim(x.shape, 3, "(batch, steps, features)")
        return x if self.data_format == "channels_last" else x.transpose(0, 2, 1)

    def _output(self, y):
        """(B,C) -> the layer's output shape."""
        if not self.keepdims:
            return y
        return y[:, None, :] if self.data_format == "channels_last" else y[:, :, None]

    def _input_gradient(self, dx):
        """(B,T,C) -> the input's layout."""
        return dx if self.data_format == "channels_last" else np.ascontiguousarray(dx.transpose(0, 2, 1))

    def _output_gradient(self, d):
        """dL/d(output) as (B,1,C), to broadcast over the steps."""
        d = np.asarray(d, np.float32)
        return d.reshape(d.shape[0], 1, -1)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Keras's GlobalMaxPooling1D: the max over the steps. As Keras, it ignores a mask
    (masked steps count; a warning says the mask is dropped). The gradient goes to the steps
    that reach the max, shared equally among ties (torch's amax, TensorFlow's reduce_max)."""
    _scratch = ("_x",)

    def call(self, x, training=False, mask=None):
        _warn_mask_dropped(self, mask)
        x = self._steps_view(x)
        if x.shape[1] == 0:
            raise ValueError(f"{self.name}: cannot compute the max over 0 steps")
        y = x.max(axis=1)
        if training:
            self._x = x
        return self._output(y)

    def backward(self, d):
        x = self._x
        ties = x == x.max(axis=1, keepdims=True)  # (B,T,C)
        with np.errstate(invalid="ignore", divide="ignore"):
            dx = ties * (self._output_gradient(d) / ties.sum(axis=1, keepdims=True, dtype=np.float32))
        return self._input_gradient(dx.astype(np.float32, copy=False)), []


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Keras's GlobalAveragePooling1D: the mean over the steps, or with a mask (B,T) the sum
    over the unmasked steps divided by their count (a fully masked row is 0/0 = NaN, as in
    Keras). The mask stops here."""
    _scratch = ("_shape", "_count", "_mask")

    def call(self, x, training=False, mask=None):
        x = self._steps_view(x)
        mask = _time_mask(mask, x.shape[:2], self.name)
        if mask is None:
            count = np.full((len(x), 1), x.shape[1], np.float32)
            total = x.sum(axis=1)
        else:
            keep = mask[:, :, None]
            count = keep.sum(axis=1, dtype=np.float32)  # (B,1)
            total = np.where(keep, x, np.float32(0)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = total / count
        if training:
            self._shape, self._count, self._mask = x.shape, count, mask
        return self._output(y)

    def backward(self, d):
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self._output_gradient(d) / self._count[:, :, None]  # (B,1,C)
        dx = np.broadcast_to(share, self._shape) if self._mask is None else np.where(self._mask[:, :, None], share,
                                                                                   np.float32(0))
        return self._input_gradient(np.array(dx, np.float32)), []


class Flatten(_Weightless):
    """Keras's Flatten: (B, d1, d2, ...) -> (B, d1*d2*...), (B,) -> (B, 1); channels_first
    moves the channel axis last first. A mask is dropped (with Keras's warning)."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format)

    _scratch = ("_shape",)

    def compute_mask(self, inputs, mask=None):
        return None

    def output_shape(self, input_shape):
        if len(input_shape) < 1:
            self._check_ndim(input_shape, 1, "(batch, ...)")
        rest = input_shape[1:]
        return (input_shape[0], None if any(d is None for d in rest) else int(np.prod(rest, dtype=np.int64)))

    def _channels_last(self, x):
        if self.data_format == "channels_first" and x.ndim > 2:
            return x.transpose((0, *range(2, x.ndim), 1))
        return x

    def call(self, x, training=False, mask=None):
        _warn_mask_dropped(self, mask)
        x = self._channels_last(_float32_input(x, self.name))
        if x.ndim < 1:
            self._check_ndim(x.shape, 1, "(batch, ...)")
        if training:
            self._shape = x.shape
        return x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(len(x), 1)

    def backward(self, d):
        dx = np.asarray(d, np.float32).reshape(self._shape)
        if self.data_format == "channels_first" and dx.ndim > 2:
            dx = dx.transpose((0, dx.ndim - 1, *range(1, dx.ndim - 1)))
        return np.ascontiguousarray(dx), []

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Activation(_Weightless):
    """Keras's Activation: an activation (a name or a fastlstm.activations function) applied
    element-wise (softmax and log_softmax: over the last axis). The mask passes through; a
    softmax's or sigmoid's output carries its logits, as Dense's."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.serialize(activation)

    _scratch = ("_z", "_y")

    def call(self, x, training=False, mask=None):
        z = _float32_input(x, self.name)
        y = _activate(self.activation, z)
        if training:
            self._z, self._y = z, y
        return y

    def backward(self, d):
        return _activation_gradient(self.activation, self._z, self._y, d), []

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class _Merge(_Weightless):
    """Keras's merge layers: called on a list of tensors of one rank (Keras's broadcasting of
    size-1 dimensions included). backward(d) -> ([d input, ...], [])."""

    _scratch = ("_shapes",)

    def _check_inputs(self, input_shape):
        """The list of input shapes, checked as Keras's Merge.build."""
        if not isinstance(input_shape, (list, tuple)) or not input_shape or \
                not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError("A merge layer should be called on a list of inputs. "
                             f"Received: input_shape={input_shape} (not a list of shapes)")
        shapes = [tuple(s) for s in input_shape]
        batch_sizes = {s[0] for s in shapes if s} - {None}
        if len(batch_sizes) > 1:
            raise ValueError(f"Cannot merge tensors with different batch sizes. Received tensors with shapes {shapes}")
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"{self.name}: fastlstm merges inputs of one rank; received shapes {shapes}")
        return shapes

    def output_shape(self, input_shape):
        shapes = self._check_inputs(input_shape)
        out = [None if None in dims else max(dims) for dims in zip(*shapes)]
        for k, dims in enumerate(zip(*shapes)):
            if k and len({d for d in dims if d not in (None, 1)}) > 1:
                raise ValueError(f"Inputs have incompatible shapes. Received shapes {shapes[0][1:]} and "
                                 f"{next(s for s in shapes if s[k] not in (None, 1, out[k]))[1:]}")
        batch = {s[0] for s in shapes} - {None}
        return (batch.pop() if batch else None,) + tuple(out[1:])

    def _inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"A merge layer should be called on a list of inputs. Received: inputs={inputs!r} "
                             "(not a list of tensors)")
        xs = [_float32_input(x, self.name) for x in inputs]
        self.output_shape([x.shape for x in xs])
        self._shapes = [x.shape for x in xs]
        return xs

    def compute_mask(self, inputs, mask=None):
        """Keras's Merge: the OR of the input masks, None if any input has none."""
        if mask is None or any(m is None for m in mask):
            return None
        return np.logical_or.reduce([np.asarray(m, bool) for m in mask])

    def backward(self, d):
        return [_unbroadcast(g, shape) for g, shape in zip(self._input_gradients(d), self._shapes)], []


def _unbroadcast(d, shape):
    """d summed over the axes that broadcasting stretched from size 1 in `shape`."""
    axes = tuple(k for k, (a, b) in enumerate(zip(d.shape, shape)) if b == 1 and a != 1)
    return np.ascontiguousarray(d.sum(axis=axes, keepdims=True) if axes else d, dtype=np.float32)


class Add(_Merge):
    """Keras's Add: the element-wise sum of the inputs."""

    def call(self, inputs, training=False, mask=None):
        xs = self._inputs(inputs)
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def _input_gradients(self, d):
        return [d] * len(self._shapes)


class Average(Add):
    """Keras's Average: the element-wise mean of the inputs (their sum / their count)."""

    def call(self, inputs, training=False, mask=None):
        return super().call(inputs) / np.float32(len(self._shapes))

    def _input_gradients(self, d):
        return [d / np.float32(len(self._shapes))] * len(self._shapes)


class Concatenate(_Merge):
    """Keras's Concatenate: the inputs joined along `axis` (the others must match)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"Concatenate: axis must be an integer, got {axis!r}")
        self.axis = int(axis)

    def output_shape(self, input_shape):
        shapes = self._check_inputs(input_shape)
        rank = len(shapes[0])
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self.name}: axis={self.axis} is not a feature or time axis of inputs of rank {rank}")
        axis = self.axis % rank
        for k in range(1, rank):
            if k != axis and len({s[k] for s in shapes} - {None}) > 1:
                raise ValueError("A `Concatenate` layer requires inputs with matching shapes except for the "
                                 f"concatenation axis. Received: input_shape={shapes}")
        out = list(shapes[0])
        out[axis] = None if any(s[axis] is None for s in shapes) else sum(s[axis] for s in shapes)
        for k in range(1, rank):
            if k != axis and out[k] is None:
                out[k] = next((s[k] for s in shapes if s[k] is not None), None)
        return tuple(out)

    def call(self, inputs, training=False, mask=None):
        return np.concatenate(self._inputs(inputs), axis=self.axis)

    def compute_mask(self, inputs, mask=None):
        """Keras's: each input's mask (all true where it has none) stretched to its shape,
        joined along `axis`, then true where any feature is (the last axis reduced)."""
        if mask is None or all(m is None for m in mask):
            return None
        shapes = [np.shape(x) for x in inputs]
        full = []
        for shape, m in zip(shapes, mask):
            m = np.ones(shape, bool) if m is None else np.asarray(m, bool)
            full.append(np.broadcast_to(m[..., None], shape) if m.ndim < len(shape) else m)
        return np.any(np.concatenate(full, axis=self.axis), axis=-1)

    def _input_gradients(self, d):
        ends = np.cumsum([s[self.axis] for s in self._shapes])[:-1]
        return np.split(d, ends, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def add(inputs, **kwargs):
    """Keras's keras.layers.add: Add(**kwargs)(inputs)."""
    return Add(**kwargs)(inputs)


def average(inputs, **kwargs):
    """Keras's keras.layers.average: Average(**kwargs)(inputs)."""
    return Average(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """Keras's keras.layers.concatenate: Concatenate(axis, **kwargs)(inputs)."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def _shape_tuple(shape, what):
    """A shape as Keras's standardize_shape: a tuple of non-negative ints or None."""
    if shape is None or isinstance(shape, str) or not hasattr(shape, "__iter__"):
        raise ValueError(f"Cannot convert {what}={shape!r} to a shape")
    out = []
    for d in shape:
        if d is not None and (isinstance(d, (bool, float, str)) or not isinstance(d, (int, np.integer)) or d < 0):
            raise ValueError(f"Cannot convert '{tuple(shape)}' to a shape. Found invalid dimension '{d}'")
        out.append(None if d is None else int(d))
    return tuple(out)


def _dtype_name(dtype):
    """Keras's dtype names ('float32', 'int32', ...); None is float32 (Keras's floatx)."""
    if dtype is None:
        return "float32"
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"Invalid dtype: {dtype!r}") from None


class KerasTensor:
    """What `Input` returns: a symbolic input of `shape` (batch first) and `dtype`, made by
    the InputLayer `_keras_history[0]` (as Keras's). A Sequential takes it as its first item."""

    def __init__(self, shape, dtype="float32", sparse=False, name=None, input_layer=None):
        self.shape, self.dtype, self.sparse = _shape_tuple(shape, "shape"), _dtype_name(dtype), bool(sparse)
        self.name = name or backend.auto_name("KerasTensor")
        self._keras_history = (input_layer, 0, 0)  # (operation, node index, tensor index)

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return (f"<KerasTensor shape={self.shape}, dtype={self.dtype}, sparse={self.sparse}, "
                f"ragged=False, name={self.name}>")


class InputLayer(_Weightless):
    """Keras's InputLayer: fixes the input's shape (`batch_input_shape()`) and dtype; no
    weights, the input passes unchanged. As the first item of a Sequential (or through
    `Input`), the model is built from it at once."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None,
                 name=None, optional=False, **kwargs):
        if "input_shape" in kwargs:
            warnings.warn("Argument `input_shape` is deprecated. Use `shape` instead.", stacklevel=2)
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        if kwargs.get("input_tensor") is not None:
            raise ValueError("fastlstm's InputLayer takes no input_tensor")
        kwargs.pop("input_tensor", None)
        super().__init__(name=name, **kwargs)
        if shape is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `shape` and `batch_shape` at the same time.")
        if batch_size is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `batch_size` and `batch_shape` at the same time.")
        if shape is None and batch_shape is None:
            raise ValueError("You must pass a `shape` argument.")
        if shape is not None:
            batch_shape = (batch_size,) + _shape_tuple(shape, "shape")
        self.batch_shape = _shape_tuple(batch_shape, "batch_shape")
        self.dtype = _dtype_name(dtype)
        self.sparse, self.ragged, self.optional = bool(sparse), bool(ragged), bool(optional)
        for what in ("sparse", "ragged", "optional"):
            if getattr(self, what):
                raise ValueError(f"`{what}=True` is not supported by fastlstm")
        self.output = KerasTensor(self.batch_shape, self.dtype, name=name, input_layer=self)

    def batch_input_shape(self):
        return self.batch_shape

    def call(self, x, training=False, mask=None):
        return x

    def backward(self, d):
        return d, []

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self.dtype, "sparse": self.sparse, "ragged": self.ragged,
                "name": self.name, "optional": self.optional}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, ragged=None, batch_shape=None, name=None):
    """Keras's Input: a KerasTensor of an InputLayer (the first item of a Sequential)."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, ragged=ragged,
                      batch_shape=batch_shape, name=name).output
