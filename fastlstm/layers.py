"""Keras-style layers: weights created once in `build`, forward in `call`, and `backward`.

Each layer keeps what its backward needs from the last training-mode `call`. Gradients
are returned in the order of `weights`.
"""
import threading

import numpy as np

from fastlstm import _core, _fork, initializers


class Layer:
    # Attributes that hold per-call scratch (workspaces, what backward needs from the last
    # training call): never pickled or deep-copied, re-created empty by _init_scratch.
    _scratch = ()

    def __init__(self, name=None, input_shape=None):
        self.name = name or type(self).__name__.lower()
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.built = False
        self._init_scratch()
        _fork.register(self)

    def _init_scratch(self):
        pass

    def _after_fork(self):
        self._init_scratch()

    def __getstate__(self):
        # A built layer's initializers have done their work; dropping them lets a model
        # built with lambda initializers pickle.
        return {k: v for k, v in self.__dict__.items()
                if k not in self._scratch and not (self.built and k.endswith("_initializer"))}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_scratch()
        _fork.register(self)

    def _check_ndim(self, input_shape, ndim, what):
        """Keras's input check, before any weight is made from the shape."""
        if len(input_shape) != ndim:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected "
                             f"ndim={ndim} {what}, found ndim={len(input_shape)}; full shape received: "
                             f"{tuple(input_shape)}")

    @property
    def weights(self):
        """The trainable arrays, in Keras's order."""
        return []

    def count_params(self):
        return sum(w.size for w in self.weights)

    def add_weight(self, initializer, shape):
        """A new weight array: float32, C-contiguous (the kernels and Adam update it in place),
        always a copy (training must not change an array the initializer handed over)."""
        shape = tuple(int(s) for s in shape)
        w = np.array(initializer(shape), dtype=np.float32, order="C", copy=True)
        if w.shape != shape:
            raise ValueError(f"{self.name}: the initializer returned shape {w.shape}, expected {shape}")
        return w


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
    """Token id -> vector lookup: (B,T) ids -> (B,T,output_dim). Table (input_dim, output_dim)."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None))
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

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(self.embeddings_initializer, (self.input_dim, self.output_dim))
        self.built = True

    @property
    def weights(self):
        return [self.embeddings] if self.built else []

    _scratch = ("_ids",)

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 2, "(batch, timesteps) token ids")
        return tuple(input_shape[:2]) + (self.output_dim,)

    def ids(self, x):
        return _int_ids(x, self.input_dim)

    def call(self, x, training=False):
        ids = self.ids(x)
        if training:
            self._ids = ids
        return self.embeddings[ids]

    def backward(self, dy):
        """dy (B,T,E) -> [d embeddings]"""
        d = np.zeros_like(self.embeddings)
        np.add.at(d, self._ids.reshape(-1), dy.reshape(-1, self.output_dim))
        return None, [d]


_ACTIVATIONS = {
    None: (lambda z: z, lambda y, dy: dy),
    "linear": (lambda z: z, lambda y, dy: dy),
    "relu": (lambda z: np.maximum(z, 0), lambda y, dy: dy * (y > 0)),
    "tanh": (np.tanh, lambda y, dy: dy * (1 - y * y)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda y, dy: dy * y * (1 - y)),
    "softmax": (None, None),  # handled in Dense: needs the row-wise Jacobian
}


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Dense(Layer):
    """y = activation(x @ kernel + bias); kernel (in, units), bias (units)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None))
        if kwargs:
            raise TypeError(f"Dense got unexpected arguments {sorted(kwargs)}")
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {[a for a in _ACTIVATIONS if a]}")
        self.units, self.activation, self.use_bias = int(units), activation, use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(self.kernel_initializer, (int(input_shape[-1]), self.units))
        self.bias = self.add_weight(self.bias_initializer, (self.units,)) if self.use_bias else None
        self.built = True

    @property
    def weights(self):
        if not self.built:
            return []
        return [self.kernel, self.bias] if self.use_bias else [self.kernel]

    _scratch = ("_x", "_y")

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            self._check_ndim(input_shape, 2, "(batch, ..., features)")
        return tuple(input_shape[:-1]) + (self.units,)

    def _bias(self):
        return self.bias if self.use_bias else np.zeros(self.units, np.float32)

    def logits(self, x):
        """x @ kernel + bias over the last axis, in the C++ kernel (numpy's BLAS threads
        would spin against the LSTM's)."""
        x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        return _core.affine(x2, self.kernel, self._bias()).reshape(x.shape[:-1] + (self.units,))

    def call(self, x, training=False):
        z = self.logits(x)
        y = softmax(z) if self.activation == "softmax" else _ACTIVATIONS[self.activation][0](z)
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy, dz=None):
        """dy = dL/d(output), or dz = dL/d(logits) when the loss took the logits."""
        if dz is None:
            y = self._y
            if self.activation == "softmax":
                dz = y * (dy - np.sum(dy * y, axis=-1, keepdims=True))
            else:
                dz = _ACTIVATIONS[self.activation][1](y, dy)
        x2 = np.ascontiguousarray(self._x.reshape(-1, self._x.shape[-1]), dtype=np.float32)
        dz2 = np.ascontiguousarray(dz.reshape(-1, self.units), dtype=np.float32)
        dx, dkernel, dbias = _core.affine_backward(x2, self.kernel, dz2)
        return dx.reshape(self._x.shape), [dkernel] + ([dbias] if self.use_bias else [])


class LSTM(Layer):
    """Keras's LSTM (gates i,f,c,o; zero initial state) on the fastlstm C++ kernels.

    kernel (E,4H), recurrent_kernel (H,4H), bias (4H). Output: the last hidden state (B,H),
    or every hidden state (B,T,H) with return_sequences=True.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, return_sequences=False,
                 name=None, **kwargs):
        super().__init__(name, kwargs.pop("input_shape", None))
        if kwargs:
            raise TypeError(f"LSTM got unexpected arguments {sorted(kwargs)}")
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError("the fastlstm kernels implement activation='tanh' with "
                             "recurrent_activation='sigmoid' (Keras's defaults) only")
        self.units, self.use_bias = int(units), use_bias
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.unit_forget_bias, self.return_sequences = unit_forget_bias, return_sequences
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    _scratch = ("_workspace", "_inference", "_mode", "_x", "_used", "_emb_used", "_embedding",
                "embedding_grad")

    def _init_scratch(self):
        self._workspace = _core.Workspace()  # training: activations kept for backward, reused
        self._inference = threading.local()  # inference: one reused workspace per thread

    def build(self, input_shape):
        H = self.units
        self.kernel = self.add_weight(self.kernel_initializer, (int(input_shape[-1]), 4 * H))
        self.recurrent_kernel = self.add_weight(self.recurrent_initializer, (H, 4 * H))
        self.bias = self.add_weight(self.bias_initializer, (4 * H,))
        if self.unit_forget_bias:
            self.bias[H:2 * H] = 1.0
        if not self.use_bias:
            self.bias = np.zeros(4 * H, np.float32)  # fixed, not a weight
        self.built = True

    @property
    def weights(self):
        if not self.built:
            return []
        w = [self.kernel, self.recurrent_kernel]
        return w + [self.bias] if self.use_bias else w

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, 3, "(batch, timesteps, features)")
        B, T = input_shape[0], input_shape[1]
        return (B, T, self.units) if self.return_sequences else (B, self.units)

    def _workspace_for(self, training):
        if training:
            return self._workspace
        if not hasattr(self._inference, "workspace"):
            self._inference.workspace = _core.Workspace()
        return self._inference.workspace

    def _out(self, result):
        return result[1] if self.return_sequences else result

    def call(self, x, training=False):
        """x (B,T,E) float -> (B,H) or (B,T,H)."""
        x = float_input(x, self.name)
        self._check_ndim(x.shape, 3, "(batch, timesteps, features)")
        if x.shape[2] != self.kernel.shape[0]:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: expected "
                             f"shape=(None, None, {self.kernel.shape[0]}), found shape={x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        ws = self._workspace_for(training)
        out = _core.lstm_forward(x, self.kernel, self.recurrent_kernel, self.bias,
                                 self.return_sequences, ws, training)
        if training:
            self._mode, self._x = "dense", x
        return self._out(out)

    def call_on_embedding(self, embedding, x, training=False):
        """The layer on embedding(x) without building (B,T,E): the embedding rows in use
        are projected once, (U,E) @ kernel -> (U,4H), and the kernel gathers rows of it."""
        ids = embedding.ids(x)
        V = embedding.input_dim
        present = np.zeros(V, bool)
        present[ids] = True
        used = np.flatnonzero(present)              # (U,) token ids in this batch
        remap = np.zeros(V, np.int32)
        remap[used] = np.arange(used.size, dtype=np.int32)
        rows = remap[ids]                           # (B,T) rows of the projected table
        emb_used = embedding.embeddings[used]       # (U,E)
        table = _core.affine(emb_used, self.kernel, self.bias)
        pad_row = int(remap[0]) if present[0] else -1
        ws = self._workspace_for(training)
        out = _core.lstm_forward_tokens(rows, table, self.recurrent_kernel, pad_row,
                                        self.return_sequences, ws, training)
        if training:
            self._mode, self._used, self._emb_used = "tokens", used, emb_used
            self._embedding = embedding
        return self._out(out)

    def backward(self, dy):
        """dy (B,H) or (B,T,H) -> (d input or None, [dkernel, drecurrent, dbias]).

        After call_on_embedding, d input is None and the embedding's gradient is in
        `self.embedding_grad`."""
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self.return_sequences:
            dh_last, dh_seq = np.zeros(dy.shape[::2], np.float32), dy
        else:
            dh_last, dh_seq = dy, None
        if self._mode == "dense":
            dx, dk, dr, db = _core.lstm_backward(self._workspace, self._x, self.kernel,
                                                 self.recurrent_kernel, dh_last, dh_seq)
        else:
            dtable, dr = _core.lstm_backward_tokens(self._workspace, self.recurrent_kernel, dh_last, dh_seq)
            demb_used, dk, db = _core.affine_backward(self._emb_used, self.kernel, dtable)
            dx = None
            self.embedding_grad = np.zeros_like(self._embedding.embeddings)
            self.embedding_grad[self._used] = demb_used
        grads = [dk, dr] + ([db] if self.use_bias else [])
        return dx, grads
