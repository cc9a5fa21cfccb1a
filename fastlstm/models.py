"""`Sequential`: Keras's model API (compile / fit / evaluate / predict / weights) over fastlstm layers."""
import contextlib
import copy
import math
import signal
import threading

import numpy as np

from fastlstm import _fork, callbacks as cb_module, layers, losses, metrics as metrics_module, optimizers, saving
from fastlstm.callbacks import History  # noqa: F401 (fastlstm.models.History, as before)
from fastlstm.layers import InputLayer, Layer, LogitsGradient, float_input
from fastlstm.saving import load_model, save_model  # noqa: F401 Keras's keras.models.load_model / save_model
from fastlstm.utils import rng, summary_utils


class Model:
    """What every model has: weights, files, compile / fit / evaluate / predict over its
    outputs (one for a Sequential; one or several for a functional model). A model runs its
    layers through the one layer protocol (see layers.py) and knows no layer type: a
    subclass gives `layers`, `_forward(x, training) -> ([outputs], [masks], activity
    penalty)`, `_backward([d output]) -> gradients in weights order`, `_output_shapes`.

    `Model(inputs, outputs)` makes a functional model (functional.Functional), as Keras's."""

    def __new__(cls, *args, **kwargs):
        if cls is Model:
            if not args and "inputs" not in kwargs:
                raise TypeError("fastlstm's models are Sequential([...]) or Model(inputs, outputs) (the functional "
                                "API); subclassing keras.Model with a call() is not supported")
            from fastlstm.functional import Functional
            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, name):
        self.name, self.layers = name, []
        self.optimizer = self.loss = None
        self.compiled = False
        self._init_locks()
        _fork.register(self)

    @property
    def output_names(self):
        """Each output's name (the layer that makes it), as Keras's."""
        return [self.layers[-1].name] if self.layers else []

    @property
    def _loss_names(self):
        """What losses, metrics and labels of several outputs are keyed by (see Functional)."""
        return self.output_names

    def _structured(self, outs):
        """The outputs as the model gives them: the array of its one output."""
        return outs[0]

    def get_layer(self, name=None, index=None):
        """A layer by name or by index in `layers`, as Keras's."""
        if index is not None and name is not None:
            raise ValueError(f"Provide only a layer name or a layer index. Received: index={index}, name={name}.")
        if index is not None:
            if len(self.layers) <= index:
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only has "
                                 f"{len(self.layers)} layers.")
            return self.layers[index]
        if name is not None:
            for layer in self.layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[layer.name for layer in self.layers]}.")
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

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
            # `history` (the last fit's History callback, which refers back to the model) is not state,
            # nor a functional model's `_values` (the last training forward's, for its backward)
            return copy.deepcopy({k: v for k, v in self.__dict__.items()
                                  if k not in ("_lock", "_weights_lock", "history", "_values")})

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_locks()
        _fork.register(self)

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self):
        return sum(w.size for w in self.weights)

    def summary(self, line_length=None, positions=None, print_fn=None):
        """Keras's table of layers, output shapes and parameter counts (trainable and not)."""
        if positions is not None:
            raise ValueError("fastlstm lays the summary out in Keras's default columns: positions must be None")
        summary_utils.print_summary(self, line_length=line_length, print_fn=print_fn)

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

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Write all weights, atomically: Keras's layout for a name ending in .weights.h5
        (keras's model.load_weights reads it), else numpy's .npz."""
        saving.save_weights(self, filepath, overwrite, max_shard_size)

    def load_weights(self, filepath, skip_mismatch=False):
        """Read weights from a .weights.h5 or .keras file (fastlstm's or Keras's) or from an
        .npz file; counts and shapes are checked before any weight changes."""
        saving.load_weights(self, filepath, skip_mismatch)

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Keras 3's .keras file of the model (config, weights, compile settings and optimizer
        state): keras.models.load_model and fastlstm.models.load_model read it."""
        saving.save_model(self, filepath, overwrite, zipped, **kwargs)
    # ---- training ----------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True):
        """Keras's compile: the optimizer (default 'rmsprop', as Keras), the loss (needed to
        train or evaluate), metrics (logged under the names given) and weighted_metrics (those
        also weighted by sample/class weights). With several outputs, as Keras: one loss for
        all, or a list (output order) or dict (by output name) of losses (None: no loss for that
        output), loss_weights likewise, metrics as a list of one entry per output or a dict.
        run_eagerly, jit_compile and auto_scale_loss change nothing here (fastlstm has no
        graph to compile)."""
        if steps_per_execution != 1:
            raise ValueError("fastlstm runs one batch per step: steps_per_execution must be 1")
        # as given, for get_compile_config (Keras's file keeps what the user wrote: "acc" stays "acc")
        self._compile_args = {"loss": loss, "loss_weights": loss_weights, "metrics": metrics,
                              "weighted_metrics": weighted_metrics, "run_eagerly": run_eagerly,
                              "steps_per_execution": steps_per_execution, "jit_compile": jit_compile}
        names = self._loss_names or ["output"]
        per_output_loss = _per_output(loss, names, "loss", broadcast=True)
        if not isinstance(loss_weights, (dict, list, tuple)):  # None or one weight for every output
            weights = [loss_weights] * len(names)
        else:
            weights = _per_output(loss_weights, names, "loss_weights")
            if isinstance(loss_weights, dict) and any(w is None for w, l in zip(weights, per_output_loss) if l is not None):
                raise ValueError(f"loss_weights {loss_weights!r} gives no weight for an output with a loss "
                                 f"(outputs {names})")
        self.optimizer = optimizers.get(optimizer)
        self.loss = None if all(spec is None for spec in per_output_loss) else loss
        # Each output's loss: None (no loss), or a Loss; 'crossentropy'/'ce' is resolved on the first labels
        # (binary, sparse or categorical by their shapes, as Keras), held as the name until then.
        self._output_losses = [None if spec is None else spec if _is_crossentropy_name(spec) else losses.get(spec)
                               for spec in per_output_loss]
        self._loss_weights = [np.float32(1.0 if w is None else w) for w in weights]
        # resolved on the first batch (Keras: 'accuracy' by the labels' and output's shapes)
        per_metrics = _per_output(metrics, names, "metrics") if len(names) > 1 else [metrics]
        per_weighted = _per_output(weighted_metrics, names, "weighted_metrics") if len(names) > 1 else [weighted_metrics]
        self._output_metrics = [metrics_module.CompileMetrics(m, w) if m is not None or w is not None else None
                                for m, w in zip(per_metrics, per_weighted)]
        self._loss_tracker = metrics_module.Mean(name="loss")
        # Keras's per-output loss trackers (unweighted, without penalties) when more than one output has a loss
        with_loss = [name for name, fn in zip(names, self._output_losses) if fn is not None]
        self._output_loss_trackers = [metrics_module.Mean(name=f"{name}_loss") if fn is not None and len(with_loss) > 1
                                      else None for name, fn in zip(names, self._output_losses)]
        self.compiled = True

    def get_compile_config(self):
        """Keras's compile_config: the optimizer serialised, the other arguments as given."""
        return {"optimizer": optimizers.serialize(self.optimizer),
                **{k: saving.serialize_keras_object(v, k) for k, v in self._compile_args.items()}}

    @property
    def metrics(self):
        """The loss tracker, the compiled metrics' container(s), the per-output loss trackers
        (Keras's order)."""
        if not self.compiled:
            return []
        return [self._loss_tracker] + [m for m in self._output_metrics if m is not None] + \
            [t for t in self._output_loss_trackers if t is not None]

    @property
    def metrics_names(self):
        """As Keras 3: ['loss', 'compile_metrics'] with compiled metrics, ['loss'] without;
        then each output's '<name>_loss' when several outputs have a loss."""
        return [m.name for m in self.metrics]

    def reset_metrics(self):
        for m in self.metrics:
            m.reset_state()

    def _check_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call `compile()` before using the model ({what}).")
        if self.loss is None:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")

    def _penalties(self):
        """[(weight, regularizer)] of every layer (Keras adds their sum to the loss)."""
        return [pair for layer in self.layers for pair in layer.weight_regularizers()]

    def _update_metrics(self, state, loss, output_losses, n, ys, outs, masks, sample_weights):
        """Keras's per-batch state (a _MetricsState): the loss trackers weighted by the batch
        size; each output's compiled metrics get its labels as given, the output and its mask."""
        state.loss.update_state(loss, sample_weight=n)
        for tracker, value in zip(state.output_losses, output_losses):
            if tracker is not None:
                tracker.update_state(value, sample_weight=n)
        for compiled, y, out, mask, w in zip(state.compiled, ys, outs, masks, sample_weights):
            if compiled is not None:
                compiled.update_state(y, np.asarray(out), sample_weight=w, mask=mask)

    def _logs(self, state=None):
        """{name: value} of `state` (default: training's), sorted by name as Keras's logs are;
        with several outputs each metric's name starts with its output's."""
        state = state or self._training_state()
        logs = {"loss": state.loss.result()}
        for tracker in state.output_losses:
            if tracker is not None:
                logs[tracker.name] = tracker.result()
        prefixes = [f"{name}_" for name in self._loss_names] if len(state.compiled) > 1 else [""]
        for compiled, prefix in zip(state.compiled, prefixes):
            for k, v in (compiled.result() if compiled is not None else {}).items():
                key, uses = prefix + k, 0
                while key in logs:  # one output listed twice: Keras's p_accuracy, p_accuracy_1
                    uses += 1
                    key = f"{prefix}{k}_{uses}"
                logs[key] = v
        return dict(sorted(logs.items()))

    def _training_state(self):
        return _MetricsState(self._loss_tracker, self._output_metrics, self._output_loss_trackers)

    def _evaluation_state(self):
        """Fresh metrics for one evaluation run: an evaluate beside a training thread (or
        validation inside fit) neither reads nor resets the training's."""
        state = copy.deepcopy(self._training_state())
        for m in [state.loss] + [m for m in state.compiled + state.output_losses if m is not None]:
            m.reset_state()
        return state

    def _loss_and_gradient(self, labels, outs, masks, sample_weights):
        """(the weighted sum of the outputs' losses, [each output's unweighted loss or None],
        [dL/d(output) or None]) of one batch; sample_weights: each output's (None: unweighted)."""
        total, values, grads = np.float32(0), [], []
        for fn, weight, label, out, mask, sample_weight in zip(self._output_losses, self._loss_weights, labels, outs,
                                                              masks, sample_weights):
            if fn is None:
                values.append(None)
                grads.append(None)
                continue
            want = np.shape(out)[:-1] if label.ndim == np.ndim(out) - 1 else np.shape(out)
            if label.shape != want:  # the lengths an undeclared output shape left open
                raise ValueError(f"labels of shape {label.shape[1:]} per sample do not match the model's output "
                                 f"of shape {np.shape(out)[1:]} per sample")
            per_sample, grad = fn.values_and_gradient(label, out)
            loss, scale, divisor = fn.reduce(per_sample, sample_weight, mask)
            scale = (scale * weight)[..., None]

            def scaled(d):  # d * weights / divisor: with unit weights exactly d / divisor
                return d * scale / divisor

            grads.append(LogitsGradient(scaled(grad.values)) if isinstance(grad, LogitsGradient) else scaled(grad))
            values.append(np.float32(loss))
            total = np.float32(total + np.float32(loss * weight))
        return total, values, grads

    def _train_step(self, x, batch):
        """One optimizer step on x and `batch` (labels as given, prepared labels, sample
        weights or None); updates the metrics with the batch before the step."""
        y, labels, sample_weight = batch
        with self._lock:
            outs, masks, activity = self._forward(x, training=True)
            loss, output_losses, douts = self._loss_and_gradient(labels, outs, masks, sample_weight)
            loss = np.float32(loss + activity)
            grads = self._backward(douts)
            penalties = self._penalties()
            if penalties:  # Keras adds them to the loss, and their gradients to the weights'
                index = {id(w): k for k, w in enumerate(self.weights)}
                for w, reg in penalties:
                    loss = np.float32(loss + reg(w))
                    grads[index[id(w)]] = grads[index[id(w)]] + reg.gradient(w)
            # the metrics first (Keras builds them before the step): one that cannot take the batch
            # fails with the weights unchanged
            self._update_metrics(self._training_state(), loss, output_losses, len(x), y, outs, masks, sample_weight)
            pairs = self._trainable_pairs(grads)
            with self._weights_lock.writing():
                self.optimizer.apply([g for g, _ in pairs], [w for _, w in pairs])

    def _trainable_pairs(self, grads):
        """(gradient, weight) of the trainable weights, in `weights` order."""
        pairs, k = [], 0
        for layer in self.layers:
            n = len(layer.weights)
            if layer.trainable:
                pairs += list(zip(grads[k:k + n], layer.weights))
            k += n
        return pairs

    @property
    def trainable_weights(self):
        return [w for layer in self.layers if layer.trainable for w in layer.weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self.layers if not layer.trainable for w in layer.weights]

    def _prepare(self, x, y, sample_weight, class_weight, what):
        """(x, [each output's labels as given], [each output's prepared labels], [each output's
        sample weights or None]), checked. y: an array for one output; a list (output order) or dict (by
        output name) for several."""
        x = self._batchable(x, what)
        self._ensure_built(x)
        n = len(x)
        if y is None:
            raise ValueError(f"{what}: labels (y) are needed to compute the loss")
        names = self._loss_names or ["output"]
        if len(names) == 1:  # [labels] or {name: labels} of a model of one output: what Keras flattens
            if isinstance(y, (list, tuple)) and len(y) == 1 and isinstance(y[0], np.ndarray):
                y = y[0]
            elif isinstance(y, dict):
                y = _per_output(y, names, "y")[0]
        ys = _per_output(y, names, "y") if len(names) > 1 else [y]
        labels = []
        for k, (y_k, fn) in enumerate(zip(ys, self._output_losses)):
            y_k = None if y_k is None else np.asarray(y_k)
            if y_k is None:
                if fn is not None:
                    raise ValueError(f"{what}: no labels for output {names[k]!r}, which has a loss")
            elif y_k.ndim == 0 or len(y_k) != n:
                raise ValueError(f"x and y hold different numbers of samples: {n} and "
                                 f"{len(y_k) if y_k.ndim else 'a scalar'}")
            ys[k] = y_k
            out_shape = (None,) + tuple(self._output_shapes[k][1:])
            if isinstance(fn, str):  # loss='crossentropy'
                is_binary, is_sparse = metrics_module.is_binary_or_sparse_categorical(
                    y_k, np.empty((1,) + tuple(1 if d is None else d for d in out_shape[1:])))
                fn = self._output_losses[k] = (losses.BinaryCrossentropy() if is_binary else
                                               losses.SparseCategoricalCrossentropy() if is_sparse else
                                               losses.CategoricalCrossentropy())
            labels.append(None if fn is None else fn.prepare(y_k, out_shape))
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")
            if len(names) > 1:
                raise ValueError("`class_weight` is only supported for Models with a single output.")
            sample_weight = _class_weights_to_sample_weights(ys[0], class_weight)
        # one array for every output, or (several outputs) a list or dict of one per output
        several = len(names) > 1 and isinstance(sample_weight, (list, tuple, dict))
        weights = _per_output(sample_weight, names, "sample_weight") if several else [sample_weight] * len(names)
        sample_weights = _PerOutput(None if w is None else _sample_weights(w, n) for w in weights)
        return x, _PerOutput(ys), _PerOutput(labels), sample_weights

    def _batchable(self, x, what):
        return _as_batchable(x, what)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on (x, y); returns the loss and metrics of the batch (before the
        step), as Keras: a list in metric order (one value alone), or a dict."""
        self._check_compiled("train_on_batch")
        x, y, labels, sample_weight = self._prepare(x, y, sample_weight, class_weight, "train_on_batch")
        if len(x) == 0:
            raise ValueError("train_on_batch got an empty batch")
        self.reset_metrics()
        self._train_step(x, (y, labels, sample_weight))
        return self._results(self._logs(), return_dict, self._training_state())

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss and metrics of (x, y), no step."""
        self._check_compiled("test_on_batch")
        x, y, labels, sample_weight = self._prepare(x, y, sample_weight, None, "test_on_batch")
        if len(x) == 0:
            raise ValueError("test_on_batch got an empty batch")
        logs, state = self._evaluation(x, (y, labels, sample_weight), len(x), cb_module.CallbackList())
        return self._results(logs, return_dict, state)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(1, len(x)), verbose=0)

    def __call__(self, x, training=False):
        """The model on an array: its output (probabilities for a softmax head)."""
        if any(isinstance(t, layers.KerasTensor) for t in (x.values() if isinstance(x, dict) else
                                                            x if isinstance(x, (list, tuple)) else [x])):
            raise TypeError(f"model {self.name!r} was called on KerasTensors: nested models (a model used as a "
                            "layer of another) are not supported by fastlstm; use the layers themselves")
        x = self._batchable(x, "x")
        self._ensure_built(x)
        with self._weights_lock.reading():
            return self._structured([np.asarray(o) for o in self._forward(x, training=bool(training))[0]])

    def _results(self, logs, return_dict, state):
        """Keras's evaluate/train_on_batch result: the dict, or the values in metric order
        (loss, compiled metrics, the rest sorted); one value alone."""
        if return_dict:
            return logs
        names = ["loss"] + [k for c in state.compiled if c is not None for k in c.result()] + \
            [t.name for t in state.output_losses if t is not None]  # Keras: model.metrics' order, then sorted
        values = [logs[k] for k in names if k in logs] + [logs[k] for k in sorted(logs) if k not in names]
        return values[0] if len(values) == 1 else values

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1):
        """Keras's fit: epochs `initial_epoch..epochs-1` over (x, y), reshuffled each epoch
        (last batch kept), with callbacks, class or sample weights, and validation on
        `validation_data` ((x, y) or (x, y, sample_weight)) or the last `validation_split` of
        the data (taken before shuffling) every `validation_freq` epochs. Returns the History.
        Ctrl-C stops at the end of the current batch, leaving the model consistent, and raises
        KeyboardInterrupt."""
        self._check_compiled("fit")
        if steps_per_epoch is not None or validation_steps is not None:
            raise ValueError("fastlstm trains on arrays: steps_per_epoch and validation_steps must be None "
                             "(every epoch is one pass over the data)")
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        epochs = _positive_int(epochs, "epochs", allow_zero=True)
        initial_epoch = _positive_int(initial_epoch, "initial_epoch", allow_zero=True)
        verbose = _verbosity(verbose)
        x = self._batchable(x, "x")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_data is None and validation_split:
            n = len(x)
            split = int(math.floor(n * (1.0 - validation_split)))
            if split in (0, n):
                raise ValueError(f"{n} samples cannot be split with validation_split={validation_split}")
            several = len(self._loss_names) > 1
            validation_data = (x[split:], _rows_of(y, slice(split, None), several),
                               _rows_of(sample_weight, slice(split, None), several))
            x, y, sample_weight = x[:split], _rows_of(y, slice(split), several), \
                _rows_of(sample_weight, slice(split), several)
        x, y, labels, sample_weight = self._prepare(x, y, sample_weight, class_weight, "fit")
        n = len(x)
        if n == 0:
            raise ValueError("fit got no training samples")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight_val)")
            x_val, *val = self._prepare(*validation_data, *([None] * (3 - len(validation_data))), None,
                                        "validation_data")
            val_batch = _positive_int(validation_batch_size or batch_size, "validation_batch_size")
        if not (isinstance(validation_freq, list) or (isinstance(validation_freq, int) and validation_freq > 0)):
            raise ValueError("Expected `validation_freq` to be a list or int. "
                             f"Received: validation_freq={validation_freq} of the type {type(validation_freq)}.")
        steps = math.ceil(n / batch_size)
        callbacks = cb_module.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=self,
                                           verbose=verbose, epochs=epochs, steps=steps)
        self.stop_training = False
        batch_logs = callbacks.reads_batch_logs()  # else no batch's logs are computed
        callbacks.on_train_begin()
        logs = {}
        stop = _StopAtBatchEnd()
        with stop:
            for epoch in range(initial_epoch, epochs):
                self.reset_metrics()
                callbacks.on_epoch_begin(epoch)
                order = rng().permutation(n) if shuffle else np.arange(n)
                for step, s in enumerate(range(0, n, batch_size)):
                    callbacks.on_train_batch_begin(step)
                    idx = order[s:s + batch_size]
                    self._train_step(x[idx], (y[idx], labels[idx], sample_weight[idx]))
                    if stop.requested:
                        raise KeyboardInterrupt(f"training stopped by Ctrl-C in epoch {epoch + 1}, "
                                                "after a whole batch; the model is usable")
                    callbacks.on_train_batch_end(step, self._logs() if batch_logs else {})
                    if self.stop_training:
                        break
                logs = self._logs()
                if validation_data is not None and (epoch + 1 in validation_freq if isinstance(validation_freq, list)
                                                    else (epoch + 1) % validation_freq == 0):
                    val_logs = self._evaluation(x_val, val, val_batch, callbacks)[0]
                    if stop.requested:
                        raise KeyboardInterrupt(f"training stopped by Ctrl-C during validation in epoch "
                                                f"{epoch + 1}, after its last batch; the model is usable")
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                callbacks.on_epoch_end(epoch, logs)
                if stop.requested:
                    raise KeyboardInterrupt(f"training stopped by Ctrl-C at the end of epoch {epoch + 1}; "
                                            "the model is usable")
                if self.stop_training:
                    break
            callbacks.on_train_end(logs=logs)
            if stop.requested:
                raise KeyboardInterrupt("Ctrl-C at the end of training; the model is usable")
        return callbacks.history

    # ---- inference ---------------------------------------------------------------------
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs (probabilities for a softmax head) for x, in batches. Thread-safe."""
        if steps is not None:
            raise ValueError("fastlstm predicts on arrays: steps must be None")
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        verbose = _verbosity(verbose)
        x = self._batchable(x, "x")
        self._ensure_built(x)
        callbacks = cb_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose,
                                           epochs=1, steps=math.ceil(len(x) / batch_size))
        callbacks.on_predict_begin()
        parts = [[] for _ in self._output_shapes]  # each output's batches
        for group in _inference_groups(len(x), batch_size):
            with self._weights_lock.reading():
                outs = [np.asarray(o) for o in self._forward(x[group], training=False)[0]]
            for s in range(0, len(outs[0]), batch_size):  # each batch's hooks, in order
                step = (group.start + s) // batch_size
                callbacks.on_predict_batch_begin(step)
                for part, out in zip(parts, outs):
                    part.append(out[s:s + batch_size])
                callbacks.on_predict_batch_end(step, {"outputs": self._structured([p[-1] for p in parts])})
        callbacks.on_predict_end()
        return self._structured([np.concatenate(part).astype(np.float32, copy=False) if part else
                                 np.zeros((0,) + tuple(0 if d is None else d for d in shape[1:]), np.float32)
                                 for part, shape in zip(parts, self._output_shapes)])

    def _evaluate(self, x, batch, batch_size, callbacks, state):
        """Loss and metrics of x batch by batch into `state` (each batch's loss is its own
        mean, as Keras). The forward runs ~1024 rows at a time (a row's result does
        not depend on the rows beside it), one batch at a time when a layer has an activity
        regularizer (its penalty is per batch); each batch's hooks run in order."""
        y, labels, sample_weight = batch
        n = len(x)
        batch_logs = callbacks.reads_batch_logs()
        per_batch = any(getattr(layer, "activity_regularizer", None) is not None for layer in self.layers)
        groups = [slice(s, s + batch_size) for s in range(0, n, batch_size)] if per_batch else \
            _inference_groups(n, batch_size)
        for group in groups:
            with self._weights_lock.reading():
                outs, masks, activity = self._forward(x[group], training=False)
                penalties = sum((reg(w) for w, reg in self._penalties()), np.float32(0))
            for s in range(0, len(outs[0]), batch_size):
                rows = slice(group.start + s, min(group.start + s + batch_size, n))
                step = rows.start // batch_size
                callbacks.on_test_batch_begin(step)
                parts = [_batch_rows(out, s, batch_size) for out in outs]
                part_masks = [None if mask is None else mask[s:s + batch_size] for mask in masks]
                sw = sample_weight[rows]
                loss, output_losses, _ = self._loss_and_gradient(labels[rows], parts, part_masks, sw)
                loss = np.float32(loss + penalties + activity)  # activity: 0 unless per batch
                self._update_metrics(state, loss, output_losses, len(parts[0]), y[rows], parts, part_masks, sw)
                callbacks.on_test_batch_end(step, self._logs(state) if batch_logs else {})

    def _evaluation(self, x, batch, batch_size, callbacks):
        """One evaluation run with its test hooks, on its own metrics: (logs, the metrics)."""
        with self._lock:  # the training metrics between two steps
            state = self._evaluation_state()
        callbacks.on_test_begin()
        self._evaluate(x, batch, batch_size, callbacks, state)
        logs = self._logs(state)
        callbacks.on_test_end(logs)
        return logs, state

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss and metrics over (x, y), as Keras: [loss, metrics...] (the loss alone when
        compiled without metrics), or a dict with return_dict=True."""
        self._check_compiled("evaluate")
        if steps is not None:
            raise ValueError("fastlstm evaluates arrays: steps must be None")
        batch_size = _positive_int(batch_size if batch_size is not None else 32, "batch_size")
        verbose = _verbosity(verbose)
        x, y, labels, sample_weight = self._prepare(x, y, sample_weight, None, "evaluate")
        if len(x) == 0:
            raise ValueError("evaluate got no samples")
        callbacks = cb_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose,
                                           epochs=1, steps=math.ceil(len(x) / batch_size))
        logs, state = self._evaluation(x, (y, labels, sample_weight), batch_size, callbacks)
        return self._results(logs, return_dict, state)


class Sequential(Model):
    """A stack of layers, each reading the one before: Embedding -> LSTM runs fused because
    the Embedding hands on a TokenSequence that the LSTM reads as projected table rows."""

    def __init__(self, layers=None, name="sequential"):
        super().__init__(name)
        self._input_layer = None
        for layer in layers or []:
            self.add(layer)

    # ---- structure --------------------------------------------------------------------
    def add(self, layer):
        # keras.Input(...) / InputLayer(...) as the first item, as in Keras: it fixes the input
        # shape and is not one of `layers`.
        if isinstance(getattr(layer, "_keras_history", None), tuple) and isinstance(layer._keras_history[0], InputLayer):
            layer = layer._keras_history[0]
        if isinstance(layer, InputLayer):
            if self.layers or self._input_layer is not None:
                raise ValueError(f"Sequential model '{self.name}' already has its input: an Input or InputLayer "
                                 "can only be its first item")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes fastlstm layers, got {type(layer).__name__}")
        self.layers.append(layer)
        shape = (self._input_layer or self.layers[0]).batch_input_shape()
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
        self._input_shape, self._output_shapes = shapes[0], [shapes[-1]]
        self._build_input_shape = (None,) + tuple(input_shape)[1:]  # for get_config, as Keras

    def _ensure_built(self, x):
        if not self.layers:
            raise ValueError("the model has no layers")
        if not self.built:
            self.build((None,) + float_input(x, self.layers[0].name).shape[1:])  # any batch size, as Keras

    def get_config(self):
        """Keras's Sequential config: the name, each layer's config ({"module", "class_name",
        "config", ...}) and, once built, the input shape it was built for."""
        config = {"name": self.name, "trainable": True, "dtype": layers._float32_policy(),
                  "layers": [saving.serialize_keras_object(layer, f"layers[{k}]") for k, layer in enumerate(self.layers)]}
        shape = getattr(self, "_build_input_shape", None)
        if self.built and shape is not None:
            config["build_input_shape"] = list(shape)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A new model from a Sequential config (Keras's or get_config()'s): each layer from
        its config (by Keras's class_name, see saving.deserialize_layer), built for the
        config's input shape."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"A Sequential model configuration must be a dictionary with a 'layers' list. "
                             f"Received: config={config!r}")
        for key in ("trainable", "dtype"):
            if key in config and not layers._changes_nothing(key, config[key]):
                raise ValueError(f"a Sequential model with {key}={config[key]!r} is not supported by fastlstm")
        model = cls(name=config.get("name", "sequential"))
        shape = config.get("build_input_shape")
        with saving._custom_object_scope(custom_objects):
            for layer_config in config["layers"]:
                if layer_config.get("class_name") == "InputLayer" and not hasattr(layers, "InputLayer"):
                    # until fastlstm.layers has an InputLayer: Keras's input shape builds the model
                    shape = shape or (layer_config.get("config") or {}).get("batch_shape")
                    continue
                model.add(saving.deserialize_layer(layer_config))
        if shape and model.layers and not model.built:
            model.build(shape)
        return model

    def _forward(self, x, training):
        """([the last layer's output], [its mask], the layers' activity penalties of this call:
        Keras's layer losses, part of the loss). A softmax's output carries its logits. Masks
        flow from layer to layer as in Keras."""
        mask, penalty = None, np.float32(0)
        for layer in self.layers:
            x, mask = layer.call(x, training=training, mask=mask), layer.compute_mask(x, mask)
            penalty += np.float32(layer.activity_penalty(x))
        return [x], [mask], penalty

    def _backward(self, ds):
        """Gradients of every weight, in `weights` order, from ds = [dL/d(output)]."""
        grads, d = [], ds[0]
        for layer in reversed(self.layers):
            d, g = layer.backward(d)
            grads[:0] = g
        return grads


class _MetricsState:
    """A run's metrics: the loss tracker, each output's compiled metrics (None without) and
    each output's loss tracker (None unless several outputs have a loss)."""

    def __init__(self, loss, compiled, output_losses):
        self.loss, self.compiled, self.output_losses = loss, compiled, output_losses


class _PerOutput:
    """One array (or None) per model output, indexed by sample together: y[rows]."""

    def __init__(self, arrays):
        self.arrays = list(arrays)

    def __getitem__(self, rows):
        return _PerOutput(None if a is None else a[rows] for a in self.arrays)

    def __iter__(self):
        return iter(self.arrays)


def _is_crossentropy_name(spec):
    return isinstance(spec, str) and spec.lower() in ("crossentropy", "ce")


def _per_output(value, names, what, broadcast=False):
    """compile()'s and fit()'s structures as one entry per output, Keras's way: None (None
    for each), a list or tuple in output order (of exactly one entry per output), a dict by
    output name (loss, loss_weights, y, sample_weight: every output; metrics: some), or
    (broadcast, or one output) one value for every output. A metrics entry is a list."""
    n = len(names)
    if value is None:
        return [None] * n
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown or (not what.endswith("metrics") and set(value) != set(names)):
            raise ValueError(f"Expected keys {names} in {what} dict, but found {what}.keys()={list(value)}")
        entries = [value.get(name) for name in names]
    elif isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"`{what}` must hold one entry per output of the model {names}: got {len(value)} "
                             f"entries ({value!r})")
        entries = list(value)
    elif broadcast or n == 1:
        return [value] * n
    else:
        if what.endswith("metrics"):
            metrics_module.check_metrics_argument(value, what)  # Keras's message for a bare string
        raise ValueError(f"`{what}` for a model of {n} outputs {names} must be a list or a dict by output name, "
                         f"got {type(value).__name__}")
    if what.endswith("metrics"):  # each output's entry: a metric, a list of them, or None
        return [[v] if v is not None and not isinstance(v, (list, tuple, dict)) else v for v in entries]
    return entries


def _rows_of(structure, rows, several):
    """rows of y or sample_weight as fit takes them: an array, or for `several` outputs a
    list or dict of one array (or None) per output."""
    if structure is None:
        return None
    if isinstance(structure, dict):
        return {k: None if v is None else np.asarray(v)[rows] for k, v in structure.items()}
    if several and isinstance(structure, (list, tuple)):
        return [None if v is None else np.asarray(v)[rows] for v in structure]
    return np.asarray(structure)[rows]


def _sample_weights(w, n):
    """One output's sample weights as float32 (n,), checked."""
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"sample_weight must hold numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), one weight per sample, got {w.shape}")
    w = w.astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or inf")
    return w


def _batch_rows(out, start, batch_size):
    """Rows start..start+batch_size of an output; an Output's logits go with them (a plain
    slice keeps none, and the loss takes them as in training)."""
    part = out[start:start + batch_size]
    logits = getattr(out, "logits", None)
    return part if logits is None else layers.Output.of(part, logits[start:start + batch_size], out.activation)


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def _class_weights_to_sample_weights(y, class_weight):
    """Keras's rule: each sample weighs class_weight[its class] (1.0 for classes not in the
    dict); the class is the argmax of one-hot rows, else the rounded label."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    y = np.round(y).astype(np.int64)
    if y.ndim != 1:
        raise ValueError("class_weight needs one class per sample (labels of shape (n,), (n, 1) or one-hot (n, k))")
    return np.array([class_weight.get(int(c), 1.0) for c in y], np.float32)


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


def _as_batchable(x, name, input_names=None):
    """x as an array indexable by sample (ragged lists are an error: pad them first); for a
    model of several inputs (`input_names`), a list or dict of arrays as _InputColumns."""
    if isinstance(x, _InputColumns):
        return x
    if input_names is not None and len(input_names) > 1:
        if isinstance(x, dict):
            missing = [k for k in input_names if k not in x]
            if missing or len(x) != len(input_names):
                raise ValueError(f"{name}: the model's inputs are {input_names}, got a dict with keys {list(x)}")
            x = [x[k] for k in input_names]
        if not isinstance(x, (list, tuple)) or len(x) != len(input_names):
            raise ValueError(f"{name}: the model has {len(input_names)} inputs {input_names}: pass a list or dict "
                             f"of {len(input_names)} arrays")
        arrays = [_as_batchable(a, f"{name}[{k}]") for k, a in enumerate(x)]
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(f"{name}: the inputs hold different numbers of samples: {[len(a) for a in arrays]}")
        return _InputColumns(arrays)
    if isinstance(x, dict) and input_names is not None and list(x) == list(input_names):
        x = x[input_names[0]]
    elif isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray) and x[0].ndim >= 2:
        x = x[0]  # [array] for a model of one input: the structure Keras flattens
    try:
        x = np.asarray(x)
    except ValueError as e:
        raise ValueError(f"{name} must be a rectangular array; pad sequences with pad_sequences first") from e
    if x.dtype == object:
        raise ValueError(f"{name} holds sequences of different lengths; pad them with pad_sequences first")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch and a time axis, got shape {x.shape}")
    return x


class _InputColumns:
    """The arrays of a model's several inputs (one sample per row of each), indexed by
    sample together."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, rows):
        return _InputColumns([a[rows] for a in self.arrays])


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
    """Turns Ctrl-C during fit into a request that the loop honours after a whole batch (or
    after the epoch's hooks); a second Ctrl-C raises at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C (a callback that does not return): stop at once
            raise KeyboardInterrupt("training stopped by a second Ctrl-C")
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
