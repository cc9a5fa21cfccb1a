"""`Sequential`: Keras's model API (compile / fit / evaluate / predict / weights) over fastlstm layers."""
import contextlib
import copy
import math
import os
import secrets
import signal
import stat
import threading
import time

import numpy as np

from fastlstm import _fork, optimizers
from fastlstm.layers import InputLayer, Layer, LogitsGradient, float_input
from fastlstm.utils import rng

LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
EPSILON = 1e-7  # Keras's backend epsilon, for cross-entropy on probabilities


class History:
    """What `fit` returns: `history` maps 'loss', 'accuracy', 'val_loss', 'val_accuracy' to per-epoch lists."""

    def __init__(self):
        self.history, self.epoch, self.params = {}, [], {}


class Sequential:
    """A stack of layers, each called through the one layer protocol (see layers.py):
    Sequential knows no layer type. Embedding -> LSTM runs fused because the Embedding hands
    on a TokenSequence that the LSTM reads as projected table rows."""

    def __init__(self, layers=None, name="sequential"):
        self.name, self.layers = name, []
        self.optimizer = self.loss = None
        self.metrics = []
        self._init_locks()
        _fork.register(self)
        for layer in layers or []:
            self.add(layer)

    def _init_locks(self):
        self._lock = threading.RLock()  # one training step at a time
        # Inference reads the weights while a training step's optimizer updates them in place
        # (the kernels release the GIL): a predict or evaluate call sees the weights before
        # or after a step, never part of one.
        self._weights_lock = _ReadWriteLock()

    _after_fork = _init_locks

    def __getstate__(self):
        # Locks are per process (layers drop their own scratch). The state is copied under
        # the read lock, so a model pickled while another thread trains holds whole steps.
        with self._weights_lock.reading():
            return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("_lock", "_weights_lock")})

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_locks()
        _fork.register(self)

    # ---- structure --------------------------------------------------------------------
    def add(self, layer):
        # [lay] keras.Input(...) / InputLayer(...) as the first item, as in Keras: it fixes the
        # input shape and, as in Keras, is not one of `layers`.
        if isinstance(getattr(layer, "_keras_history", None), tuple) and isinstance(layer._keras_history[0], InputLayer):
            layer = layer._keras_history[0]
        if isinstance(layer, InputLayer):
            if self.layers or getattr(self, "_input_layer", None) is not None:
                raise ValueError(f"Sequential model '{self.name}' already has its input: an Input or InputLayer "
                                 "can only be its first item")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fastlstm layers, got {type(layer).__name__}")
        self.layers.append(layer)
        shape = (getattr(self, "_input_layer", None) or self.layers[0]).batch_input_shape()
        if shape is not None:
            try:
                self.build(shape)
            except Exception:
                self.layers.pop()  # a layer that does not fit leaves the model as it was
                raise

    @property
    def built(self):
        return bool(self.layers) and all(layer.built for layer in self.layers)

    def build(self, input_shape):
        """Create every layer's weights for inputs of `input_shape` (batch first). Every
        layer's input is checked first, so a wrong shape builds nothing."""
        shapes = [tuple(input_shape)]  # each layer's input, then the model's output
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
            if isinstance(shapes[-1], list):
                raise ValueError(f"{layer.name} has {len(shapes[-1])} outputs (return_state=True): a "
                                 "Sequential model takes layers with one output")
        for layer, shape in zip(self.layers, shapes):
            if not layer.built:
                layer.build(shape)
        self._output_shape = shapes[-1]

    def _ensure_built(self, x):
        if not self.layers:
            raise ValueError("the model has no layers")
        if not self.built:
            self.build(float_input(x, self.layers[0].name).shape)

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self):
        return sum(w.size for w in self.weights)

    def summary(self, print_fn=print):
        rows = [("Layer (type)", "Output Shape", "Param #")]
        shape = (self.layers[0].batch_input_shape() if self.layers else None) or (None, None)
        for layer in self.layers:
            shape = layer.output_shape(shape) if layer.built else "?"
            rows.append((f"{layer.name} ({type(layer).__name__})", str(shape), f"{layer.count_params():,}"))
        widths = [max(len(r[k]) for r in rows) + 2 for k in range(3)]
        line = "-" * sum(widths)
        out = [f'Model: "{self.name}"', line]
        for k, r in enumerate(rows):
            out.append("".join(c.ljust(w) for c, w in zip(r, widths)))
            if k == 0:
                out.append(line)
        out += [line, f"Total params: {self.count_params():,}", line]
        print_fn("\n".join(out))

    # ---- weights ------------------------------------------------------------------------
    def get_weights(self):
        """Copies of all weights, in Keras's order and shapes."""
        with self._weights_lock.reading():
            return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Set all weights from a list like `get_weights()` (a Keras model's drops straight in)."""
        current = self.weights
        weights = list(weights)
        if len(weights) != len(current):
            raise ValueError(f"set_weights expected {len(current)} arrays, got {len(weights)}")
        new = []
        for k, (w, a) in enumerate(zip(current, weights)):
            a = np.asarray(a)
            if a.shape != w.shape:
                raise ValueError(f"weight {k} must have shape {w.shape}, got {a.shape}")
            if a.dtype.kind not in "fiu":
                raise TypeError(f"weight {k} must be numeric, got dtype {a.dtype}")
            new.append(a.astype(np.float32))
        with self._lock, self._weights_lock.writing():
            for w, a in zip(current, new):
                w[...] = a

    def save_weights(self, filepath):
        """Write all weights to an .npz file, atomically (a temporary file, then rename).
        A new file's mode follows the umask and an existing file keeps its own, as with
        np.savez."""
        filepath = _npz_path(filepath)
        folder, name = os.path.split(os.path.abspath(filepath))
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask
        try:
            if os.path.exists(filepath):  # as np.savez over an existing file: its mode stays
                os.chmod(fd, stat.S_IMODE(os.stat(filepath).st_mode))
            with os.fdopen(fd, "wb") as f:
                np.savez(f, *self.get_weights())
            os.replace(tmp, filepath)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_weights(self, filepath):
        """Read weights written by `save_weights`; counts and shapes are checked."""
        with np.load(_npz_path(filepath), allow_pickle=False) as f:
            arrays = [f[f"arr_{k}"] for k in range(len(f.files))]
        self.set_weights(arrays)

    # ---- training ----------------------------------------------------------------------
    def compile(self, loss="categorical_crossentropy", optimizer="adam", metrics=None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        metrics = list(metrics or [])
        for m in metrics:
            if m not in ("accuracy", "acc"):
                raise ValueError(f"unsupported metric {m!r}; fastlstm reports 'accuracy'")
        self.loss, self.optimizer = loss, optimizers.get(optimizer)
        self.metrics = ["accuracy"] if metrics else []

    def _check_compiled(self):
        if self.loss is None:
            raise RuntimeError("call compile() before training or evaluating")

    def _forward(self, x, training):
        """The last layer's output (a softmax's carries its logits). Masks flow from layer
        to layer as in Keras."""
        mask = None
        for layer in self.layers:
            x, mask = layer.call(x, training=training, mask=mask), layer.compute_mask(x, mask)
        return x

    def _backward(self, d):
        """Gradients of every weight, in `weights` order, from d = dL/d(output)."""
        grads = []
        for layer in reversed(self.layers):
            d, g = layer.backward(d)
            grads[:0] = g
        return grads

    def _targets(self, y, n):
        """y checked against the loss and the model's output; returns float32 one-hot or int ids."""
        k = self._output_shape[-1]
        y = np.asarray(y)
        if y.shape[:1] != (n,):
            raise ValueError(f"x and y hold different numbers of samples: {n} and {y.shape[0] if y.ndim else 'a scalar'}")
        if self.loss == "sparse_categorical_crossentropy":
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise ValueError(f"sparse labels must have shape (n,) or (n, 1), got {y.shape}")
            if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
                raise ValueError("sparse labels must be whole numbers (found NaN, inf or fractions)")
            if y.dtype.kind not in "fiub":
                raise TypeError(f"labels must be numbers, got dtype {y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"labels must be in [0, {k}) for a {k}-class output, found {y.min()}..{y.max()}")
            return y.astype(np.int64)
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"categorical labels must have shape (n, {k}) (one-hot, see to_categorical), got {y.shape}")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"labels must be numbers, got dtype {y.dtype}")
        y = y.astype(np.float32)
        if not np.all(np.isfinite(y)):
            raise ValueError("labels contain NaN or inf")
        return y

    def _loss(self, y, out):
        """Per-sample losses, dL/d(out) of the batch mean (a LogitsGradient when taken from
        the logits `out` carries), correct count."""
        # [lay] a sigmoid's output carries its logits too: log-softmax is for a softmax's only
        logits = getattr(out, "logits", None) if getattr(out, "activation", None) == "softmax" else None
        probs = np.asarray(out)
        n = probs.shape[0]
        if self.loss == "sparse_categorical_crossentropy":
            onehot = np.zeros_like(probs)
            onehot[np.arange(n), y] = 1
            y_true, labels = onehot, y
        else:
            y_true, labels = y, np.argmax(y, axis=-1)
        correct = int(np.sum(np.argmax(probs, axis=-1) == labels))
        if logits is not None:  # from the logits: stable log-softmax
            shifted = logits - logits.max(axis=-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            losses = -np.sum(y_true * logp, axis=-1)
            dlogits = (probs * y_true.sum(axis=-1, keepdims=True) - y_true) / n
            return losses, LogitsGradient(dlogits), correct
        total = probs.sum(axis=-1, keepdims=True)  # Keras on probabilities: normalise, clip
        p = probs / total
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        losses = -np.sum(y_true * np.log(pc), axis=-1)
        dp = -y_true / pc * ((p > EPSILON) & (p < 1 - EPSILON)) / n
        dprobs = (dp - np.sum(dp * p, axis=-1, keepdims=True)) / total
        return losses, dprobs, correct

    def _train_step(self, x, y):
        with self._lock:
            losses, dout, correct = self._loss(y, self._forward(x, training=True))
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError("the loss is not finite; lower the learning rate or check the data")
            grads = self._backward(dout)
            with self._weights_lock.writing():
                self.optimizer.apply(grads, self.weights)
        return float(losses.sum()), correct

    def train_on_batch(self, x, y):
        """One Adam step on (x, y) -> [loss, accuracy] of the batch (before the step)."""
        self._check_compiled()
        self._ensure_built(x)
        n = len(x)
        if n == 0:
            raise ValueError("train_on_batch got an empty batch")
        y = self._targets(y, n)
        loss, correct = self._train_step(x, y)
        return self._result(loss / n, correct / n)

    def _result(self, loss, acc):
        return [loss, acc] if self.metrics else loss

    def fit(self, x, y, batch_size=32, epochs=1, verbose="auto", validation_data=None,
            validation_split=0.0, shuffle=True):
        """Train for `epochs` passes over (x, y), reshuffled each epoch (last batch kept).

        `validation_split` takes the last fraction of (x, y), before shuffling, for
        validation; `validation_data=(x_val, y_val)` overrides it. Ctrl-C stops at the end
        of the current batch, leaving the model consistent, and raises KeyboardInterrupt.
        Returns a History.
        """
        self._check_compiled()
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        epochs = _positive_int(epochs, "epochs", allow_zero=True)
        x = _as_batchable(x, "x")
        self._ensure_built(x)
        n = len(x)
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_data is None and validation_split:
            split = int(math.floor(n * (1.0 - validation_split)))
            if split in (0, n):
                raise ValueError(f"{n} samples cannot be split with validation_split={validation_split}")
            y = np.asarray(y)
            validation_data = (x[split:], y[split:])
            x, y = x[:split], y[:split]
            n = split
        y = self._targets(y, n)
        if n == 0:
            raise ValueError("fit got no training samples")
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            x_val = _as_batchable(validation_data[0], "x_val")
            y_val = self._targets(validation_data[1], len(x_val))
        verbose = 1 if verbose == "auto" else verbose
        steps = math.ceil(n / batch_size)
        history = History()
        history.params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        stop = _StopAtBatchEnd()
        with stop:
            for epoch in range(epochs):
                t0 = time.perf_counter()
                order = rng().permutation(n) if shuffle else np.arange(n)
                total_loss, total_correct = 0.0, 0
                for s in range(0, n, batch_size):
                    idx = order[s:s + batch_size]
                    loss, correct = self._train_step(x[idx], y[idx])
                    total_loss, total_correct = total_loss + loss, total_correct + correct
                    if stop.requested:
                        raise KeyboardInterrupt(f"training stopped by Ctrl-C in epoch {epoch + 1}, "
                                                "after a whole batch; the model is usable")
                logs = {"loss": total_loss / n}
                if self.metrics:
                    logs["accuracy"] = total_correct / n
                if validation_data is not None:
                    val = self._evaluate(x_val, y_val, batch_size)
                    if stop.requested:
                        raise KeyboardInterrupt(f"training stopped by Ctrl-C during validation in epoch "
                                                f"{epoch + 1}, after its last batch; the model is usable")
                    logs["val_loss"] = val[0]
                    if self.metrics:
                        logs["val_accuracy"] = val[1]
                history.epoch.append(epoch)
                for key, v in logs.items():
                    history.history.setdefault(key, []).append(v)
                if verbose:
                    seconds = time.perf_counter() - t0
                    shown = " - ".join(f"{k}: {v:.4f}" for k, v in sorted(logs.items()))
                    print(f"Epoch {epoch + 1}/{epochs}\n{steps}/{steps} - {seconds:.1f}s - "
                          f"{1000 * seconds / steps:.0f}ms/step - {shown}", flush=True)
        return history

    # ---- inference ---------------------------------------------------------------------
    def predict(self, x, batch_size=32, verbose="auto"):
        """Model outputs (probabilities for a softmax head) for x, in batches. Thread-safe."""
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        x = _as_batchable(x, "x")
        self._ensure_built(x)
        with self._weights_lock.reading():
            outs = [np.asarray(self._forward(x[g], training=False)) for g in _inference_groups(len(x), batch_size)]
        if not outs:
            return np.zeros((0,) + tuple(self._output_shape[1:]), np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _evaluate(self, x, y, batch_size):
        total_loss, total_correct, n = 0.0, 0, len(x)
        if n == 0:
            raise ValueError("evaluate got no samples")
        with self._weights_lock.reading():
            for g in _inference_groups(n, batch_size):
                losses, _, correct = self._loss(y[g], self._forward(x[g], training=False))
                for s in range(0, len(losses), batch_size):  # summed batch by batch, as always
                    total_loss += float(losses[s:s + batch_size].sum())
                total_correct += correct
        return total_loss / n, total_correct / n

    def evaluate(self, x, y, batch_size=32, verbose="auto"):
        """[loss, accuracy] over (x, y) (just the loss when compiled without metrics)."""
        self._check_compiled()
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        x = _as_batchable(x, "x")
        self._ensure_built(x)
        loss, acc = self._evaluate(x, self._targets(y, len(x)), batch_size)
        if (1 if verbose == "auto" else verbose):
            print(f"{len(x)} samples - loss: {loss:.4f}" + (f" - accuracy: {acc:.4f}" if self.metrics else ""))
        return self._result(loss, acc)


_INFERENCE_ROWS = 1024  # about this many rows per forward call in predict and evaluate


def _inference_groups(n, batch_size):
    """Slices of whole batches of about _INFERENCE_ROWS rows: fewer, larger forward calls
    (each row's result does not depend on which rows share its call)."""
    step = batch_size * max(1, _INFERENCE_ROWS // batch_size)
    return [slice(s, s + step) for s in range(0, n, step)]


def _positive_int(v, name, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    return int(v)


def _as_batchable(x, name):
    """x as an array indexable by sample (ragged lists are an error: pad them first)."""
    try:
        x = np.asarray(x)
    except ValueError as e:
        raise ValueError(f"{name} must be a rectangular array; pad sequences with pad_sequences first") from e
    if x.dtype == object:
        raise ValueError(f"{name} holds sequences of different lengths; pad them with pad_sequences first")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch and a time axis, got shape {x.shape}")
    return x


def _npz_path(filepath):
    """filepath for a weights file: fastlstm writes .npz; Keras's formats are a clear error."""
    filepath = os.fspath(filepath)
    if filepath.lower().endswith((".h5", ".hdf5", ".keras")):
        raise ValueError(f"{filepath!r}: fastlstm reads and writes weights as .npz files (numpy's "
                         "format) for now, not Keras's HDF5 or .keras files; use a name ending in .npz")
    return filepath


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before new readers (so a stream of
    predict calls cannot hold a training step off for ever). Not re-entrant."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    # Every count changes under the condition's lock and is undone in a `finally`, so an
    # exception (Ctrl-C) while waiting or holding leaves the lock as it was.
    @contextlib.contextmanager
    def reading(self):
        held = False
        try:
            with self._cond:
                self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
                self._readers += 1
                held = True
            yield
        finally:
            if held:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self):
        held = False
        try:
            with self._cond:
                self._writers_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._writing and not self._readers)
                    self._writing = held = True
                finally:
                    self._writers_waiting -= 1
                    self._cond.notify_all()  # readers that waited only for this writer go on
            yield
        finally:
            if held:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()


class _StopAtBatchEnd:
    """Turns Ctrl-C during fit into a request that the loop honours after a whole batch."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
