"""Keras's losses, in float32 numpy, each with its gradient (what training needs).

A loss's `prepare(y_true, output_shape)` checks and converts the labels once;
`values_and_gradient(labels, y_pred)` gives the unreduced values (y_pred.shape[:-1]) and their
gradient with respect to the model's output, row by row (not yet reduced): an array shaped like
y_pred, or a `LogitsGradient` when the values were taken from the logits the output carries (a
softmax output's for the softmax cross-entropies, a sigmoid's for the binary one: Keras's
`_keras_logits`; stable, and unclipped). `reduce` folds in sample weights and a mask as Keras's
`reduce_weighted_values`. Keras's functions (`categorical_crossentropy(y_true, y_pred)`, ...)
give the per-sample values (defined in metrics.py, as Keras registers them under both names).
"""
import inspect

import numpy as np

from fastlstm.layers import LogitsGradient
# Keras's per-sample functions, one definition each (Keras registers them as losses and metrics)
from fastlstm.metrics import (binary_crossentropy, categorical_crossentropy, mean_absolute_error,  # noqa: F401
                              mean_squared_error, sparse_categorical_crossentropy)

EPSILON = np.float32(1e-7)  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight")


def _logits_of(y_pred, from_logits, activation):
    """(z, taken from the output's logits?) when the values can be taken from logits: y_pred
    itself with from_logits, or the logits an `activation` output carries; else (None, False)."""
    if from_logits:
        return np.asarray(y_pred, np.float32), False
    if getattr(y_pred, "activation", None) == activation and y_pred.logits is not None:
        return y_pred.logits, True
    return None, False


def _same_rank(y_true, pred_shape):
    """Keras's squeeze_or_expand_to_same_rank for labels: (n,) against (n, 1) and back."""
    y_true = np.asarray(y_true)
    if y_true.ndim == len(pred_shape) - 1 and pred_shape[-1] == 1:
        y_true = y_true[..., None]
    elif y_true.ndim == len(pred_shape) + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def _fits(shape, want):
    """shape matches `want`, whose None dimensions (batch, an undeclared length) match any."""
    return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))


def _float_labels(y_true, pred_shape, what):
    y_true = _same_rank(y_true, pred_shape)
    if y_true.dtype.kind not in "fiub":
        raise TypeError(f"{what} labels must be numbers, got dtype {y_true.dtype}")
    if not _fits(y_true.shape, pred_shape):
        want = "(n, " + ", ".join(str(d) for d in pred_shape[1:]) + ")"
        raise ValueError(f"{what}: labels of shape {y_true.shape} do not match the model's output: "
                         f"expected shape {want}" + (" (one-hot, see to_categorical)"
                                                     if what.startswith("categorical") else ""))
    y_true = y_true.astype(np.float32)
    if not np.all(np.isfinite(y_true)):
        raise ValueError("labels contain NaN or inf")
    return y_true


def _wrap(d, from_output_logits):
    return LogitsGradient(d) if from_output_logits else d


def _softmax_crossentropy(y_true, y_pred, from_logits):
    """-sum(y log softmax) over the last axis, from logits or from probabilities (Keras:
    normalised, clipped to [eps, 1 - eps]); gradient per row."""
    z, of_output = _logits_of(y_pred, from_logits, "softmax")
    if z is not None:
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=-1, keepdims=True)
        values = -np.sum(y_true * (shifted - np.log(s)), axis=-1)
        return values, _wrap(e / s * y_true.sum(axis=-1, keepdims=True) - y_true, of_output)
    p = np.asarray(y_pred, np.float32)
    values = categorical_crossentropy(y_true, p)  # normalised, clipped, as Keras
    total = p.sum(axis=-1, keepdims=True)
    q = p / total
    qc = np.clip(q, EPSILON, 1 - EPSILON)
    dq = -y_true / qc * ((q > EPSILON) & (q < 1 - EPSILON))  # the clip passes no gradient
    return values, (dq - np.sum(dq * q, axis=-1, keepdims=True)) / total


class Loss:
    """Keras's Loss: `loss(y_true, y_pred, sample_weight=None)` is the reduced float32 value."""

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Invalid value for argument `reduction`. Expected one of {REDUCTIONS}; "
                             f"fastlstm trains on reduced losses. Received: reduction={reduction!r}")
        if dtype not in (None, "float32"):
            raise ValueError(f"fastlstm computes losses in float32, got dtype={dtype!r}")
        self.name, self.reduction, self.dtype = name, reduction, dtype

    def prepare(self, y_true, pred_shape):
        """y_true checked against the output's shape (batch first; None for any batch) and
        converted once (float32 labels, or int64 class ids)."""
        raise NotImplementedError

    def values_and_gradient(self, y_true, y_pred):
        """(values (y_pred.shape[:-1]), d values / d y_pred row by row) for prepared labels."""
        raise NotImplementedError

    def per_sample(self, y_true, y_pred):
        return self.values_and_gradient(self.prepare(y_true, np.shape(y_pred)), y_pred)

    def reduce(self, values, sample_weight=None, mask=None):
        """(the reduced loss, weights, divisor) as Keras's reduce_weighted_values: the loss is
        sum(values * weights) / divisor, so d loss / d values = weights / divisor. Sample
        weights (batch,) broadcast over the other axes; a mask (values' shape) weighs masked
        values 0, and for the two means the unmasked ones total/valid (Keras's apply_mask)."""
        w = np.ones(values.shape, np.float32)
        if mask is not None:
            mask = np.asarray(mask, bool).reshape(values.shape)
            valid = np.float32(mask.sum())
            rescale = self.reduction in ("sum_over_batch_size", "mean")
            unmasked = (np.float32(mask.size) / valid if valid else np.float32(0)) if rescale else np.float32(1)
            w = np.where(mask, unmasked, np.float32(0))
        if sample_weight is not None:
            sw = np.asarray(sample_weight, np.float32)
            w = w * sw.reshape(sw.shape + (1,) * (values.ndim - sw.ndim))
        if self.reduction == "sum":
            divisor = np.float32(1)
        elif self.reduction == "mean_with_sample_weight" and (sample_weight is not None or mask is not None):
            divisor = np.float32(np.sum(w))
        else:
            divisor = np.float32(values.size)
        if not divisor:  # nothing weighs: Keras's divide_no_nan gives 0
            return np.float32(0), np.zeros_like(w), np.float32(1)
        return np.float32(np.sum(values * w) / divisor), w, divisor

    def __call__(self, y_true, y_pred, sample_weight=None):
        return float(self.reduce(self.per_sample(y_true, y_pred)[0], sample_weight)[0])

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_axis(axis):
    if axis != -1:
        raise ValueError(f"fastlstm's losses reduce over the last axis (axis=-1), got axis={axis!r}")
    return axis


class CategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(name, reduction, dtype)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.from_logits, self.label_smoothing, self.axis = bool(from_logits), float(label_smoothing), _check_axis(axis)

    def prepare(self, y_true, pred_shape):
        if np.ndim(y_true) == len(pred_shape) - 1 and pred_shape[-1] != 1:
            raise ValueError(f"categorical_crossentropy takes one-hot labels of shape {tuple(pred_shape)}, got "
                             f"shape {np.shape(y_true)}: one-hot them (to_categorical) or use "
                             "sparse_categorical_crossentropy for integer labels")
        return _float_labels(y_true, pred_shape, "categorical_crossentropy")

    def values_and_gradient(self, y_true, y_pred):
        if self.label_smoothing:
            ls = np.float32(self.label_smoothing)
            y_true = y_true * (np.float32(1) - ls) + ls / np.float32(y_true.shape[-1])
        return _softmax_crossentropy(y_true, y_pred, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class SparseCategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size", axis=-1,
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(name, reduction, dtype)
        if ignore_class is not None:
            raise ValueError("ignore_class is not supported by fastlstm yet")
        self.from_logits, self.ignore_class, self.axis = bool(from_logits), ignore_class, _check_axis(axis)

    def prepare(self, y_true, pred_shape):
        y = np.asarray(y_true)
        if y.ndim == len(pred_shape) and y.shape[-1:] == (1,):
            y = y[..., 0]
        want = tuple(pred_shape[:-1])
        if not _fits(y.shape, want):
            raise ValueError(f"sparse_categorical_crossentropy: labels of shape {np.shape(y_true)} do not "
                             f"match the model's output of shape {tuple(pred_shape)} (one integer class "
                             "per sample)")
        if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
            raise ValueError("sparse labels must be whole numbers (found NaN, inf or fractions)")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"labels must be numbers, got dtype {y.dtype}")
        k = pred_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels must be in [0, {k}) for a {k}-class output, found {y.min()}..{y.max()}")
        return y.astype(np.int64)

    def values_and_gradient(self, y_true, y_pred):
        onehot = (y_true[..., None] == np.arange(np.shape(y_pred)[-1])).astype(np.float32)
        return _softmax_crossentropy(onehot, y_pred, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_class": self.ignore_class}


class BinaryCrossentropy(Loss):
    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(name, reduction, dtype)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.from_logits, self.label_smoothing, self.axis = bool(from_logits), float(label_smoothing), _check_axis(axis)

    def prepare(self, y_true, pred_shape):
        return _float_labels(y_true, pred_shape, "binary_crossentropy")

    def values_and_gradient(self, y, y_pred):
        if self.label_smoothing:
            ls = np.float32(self.label_smoothing)
            y = y * (np.float32(1) - ls) + np.float32(0.5) * ls
        k = np.float32(y.shape[-1])
        z, of_output = _logits_of(y_pred, self.from_logits, "sigmoid")
        if z is not None:  # max(z, 0) - z y + log(1 + exp(-|z|)); d/dz = sigmoid(z) - y
            values = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=-1)
            sigmoid = np.exp(-np.logaddexp(np.float32(0), -z))
            return values, _wrap((sigmoid - y) / k, of_output)
        p = np.asarray(y_pred, np.float32)
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        values = binary_crossentropy(y, p)
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        return values, ((1 - y) / (1 - pc) - y / pc) * inside / k

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class MeanSquaredError(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name, reduction, dtype)

    def prepare(self, y_true, pred_shape):
        return _float_labels(y_true, pred_shape, "mean_squared_error")

    def values_and_gradient(self, y_true, y_pred):
        e = np.asarray(y_pred, np.float32) - y_true
        return mean_squared_error(y_true, y_pred), 2 * e / np.float32(e.shape[-1])


class MeanAbsoluteError(Loss):
    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name, reduction, dtype)

    def prepare(self, y_true, pred_shape):
        return _float_labels(y_true, pred_shape, "mean_absolute_error")

    def values_and_gradient(self, y_true, y_pred):
        e = np.asarray(y_pred, np.float32) - y_true
        return mean_absolute_error(y_true, y_pred), np.sign(e) / np.float32(e.shape[-1])


_CLASSES = (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError,
            MeanAbsoluteError)
_FUNCTIONS = {categorical_crossentropy: CategoricalCrossentropy,
              sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
              binary_crossentropy: BinaryCrossentropy, mean_squared_error: MeanSquaredError,
              mean_absolute_error: MeanAbsoluteError}
# Keras's names: class names, function names, and its short aliases
_BY_NAME = {c.__name__: c for c in _CLASSES}
_BY_NAME.update({f.__name__: c for f, c in _FUNCTIONS.items()})
_BY_NAME.update({"bce": BinaryCrossentropy, "BCE": BinaryCrossentropy, "mse": MeanSquaredError,
                 "MSE": MeanSquaredError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError})
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


def get(identifier):
    """A Loss object for Keras's identifiers: a name ('categorical_crossentropy', 'mse',
    'BinaryCrossentropy', ...), a Loss, one of this module's functions, a class, or a config
    dict {"class_name": ..., "config": {...}}."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        cls = _BY_NAME.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Could not interpret loss identifier: {identifier}")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"Could not interpret loss identifier: {identifier}")
        return cls()
    if inspect.isclass(identifier) and issubclass(identifier, Loss):
        return identifier()
    if identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    if callable(identifier):
        raise ValueError(f"custom loss {getattr(identifier, '__name__', identifier)!r}: fastlstm trains "
                         "with its own losses, whose gradients it knows (categorical_crossentropy, "
                         "sparse_categorical_crossentropy, binary_crossentropy, mse, mae)")
    raise ValueError(f"Could not interpret loss identifier: {identifier}")
