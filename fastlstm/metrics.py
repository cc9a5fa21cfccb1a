"""Keras 3's metrics on numpy arrays: stateful objects (`update_state(y_true, y_pred,
sample_weight=None)`, `result()`, `reset_state()`, `get_config()`), their per-sample
functions, `get(identifier)`, and what `compile(metrics=...)` does with them (Keras's
`keras/src/metrics/` and `keras/src/trainers/compile_utils.py`).

Numerics as Keras's: a metric's state is kept in `dtype` (float32) like Keras's variables;
each batch's sums are taken in float64 and added to that state in float32, and `result()`
computes in float32 (a Python float, or a float32 array for several thresholds). Every
comparison that decides a count (a threshold, an AUC bucket, an argmax) is made on float32
values exactly as Keras makes it. Inputs: y_pred float probabilities (or logits where
`from_logits`), (n, k), (n, 1) or (n,); y_true one-hot, class ids or 0/1 values;
sample_weight (n,) or None.
"""
import collections
import inspect
import re
import warnings

import numpy as np

EPSILON = 1e-7  # Keras's backend epsilon: clipping of probabilities, AUC's end thresholds
NEG_INF = -1e10  # Keras's threshold (and filtered value) for top_k precision and recall

# ---------------------------------------------------------------------------------------------
# Names


_name_uids = collections.defaultdict(int)  # Keras's auto-name counter: AUC(), AUC() -> auc, auc_1


def to_snake_case(name):
    """Keras's snake case of a class or function name: 'TopKCategoricalAccuracy' ->
    'top_k_categorical_accuracy', 'AUC' -> 'auc'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _auto_name(class_name):
    base = to_snake_case(class_name)
    n = _name_uids[base]
    _name_uids[base] += 1
    return base if n == 0 else f"{base}_{n}"


def _object_name(obj):
    """Keras's get_object_name: an object's `name`, else its function or class name in snake case."""
    if hasattr(obj, "name"):
        return obj.name
    if hasattr(obj, "__name__"):
        return to_snake_case(obj.__name__)
    return to_snake_case(type(obj).__name__)


# ---------------------------------------------------------------------------------------------
# Array helpers


def _float32(x):
    return np.asarray(x, dtype=np.float32)


def _pred(y_pred):
    """y_pred as an array; floating predictions are taken in float32 (Keras's floatx)."""
    y = np.asarray(y_pred)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y_pred must hold numbers, got an array of dtype {y.dtype}")
    return y.astype(np.float32) if y.dtype.kind == "f" else y


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Keras's rule: when the ranks differ by one and the longer one ends in 1, squeeze that
    axis, or (expand_rank_1, the shorter one of rank 1) give the shorter one a last axis."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = x1[..., 0]
    elif x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _divide_no_nan(a, b):
    """a / b, 0 where b == 0 (Keras's divide_no_nan), in the arrays' dtype."""
    return np.where(b == 0, 0, a / np.where(b == 0, 1, b))


def _check_same_shape(y_true, y_pred, fn_name, what="y_true"):
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{fn_name}: {what} of shape {y_true.shape} does not match y_pred of shape {y_pred.shape}")


def _class_ids(y_true, n_classes, fn_name):
    """y_true's class ids as int64 (truncated as Keras's cast), each in [0, n_classes)."""
    ids = np.asarray(y_true)
    if ids.dtype.kind not in "biuf":
        raise ValueError(f"{fn_name}: y_true must hold class ids, got dtype {ids.dtype}")
    if ids.dtype.kind == "f" and not np.isfinite(ids).all():
        raise ValueError(f"{fn_name}: y_true holds non-finite class ids")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
        raise ValueError(f"{fn_name}: class ids must be in [0, {n_classes}), got values in "
                         f"[{ids.min()}, {ids.max()}]")
    return ids


# ---------------------------------------------------------------------------------------------
# Per-sample functions: fn(y_true, y_pred) -> values (n,) or (n, ...), float32


def accuracy(y_true, y_pred):
    """1 where y_pred equals y_true (compared in y_pred's dtype)."""
    y_pred = _pred(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    return (y_true == y_pred).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1 where (y_pred > threshold) equals y_true."""
    y_pred, y_true = _pred(y_pred), np.asarray(y_true)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    predicted = (y_pred > np.float32(threshold)).astype(y_true.dtype)
    return (y_true == predicted).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1 where argmax(y_pred) equals argmax(y_true) (one-hot y_true; the first maximum wins a tie)."""
    y_pred, y_true = _pred(y_pred), np.asarray(y_true)
    _check_same_shape(y_true, y_pred, "categorical_accuracy", "one-hot y_true (integer labels: "
                      "use sparse_categorical_accuracy)")
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _sparse_labels(y_true, y_pred, fn_name):
    """Class labels y_true (n,) or (n, 1) for y_pred (n, k): the (n,) array, checked."""
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1:] == (1,):
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape[:-1]:
        raise ValueError(f"{fn_name}: class labels of shape {y_true.shape} do not match y_pred of "
                         f"shape {y_pred.shape} (one-hot labels: use the categorical metric)")
    return y_true


def sparse_categorical_accuracy(y_true, y_pred):
    """1 where argmax(y_pred) equals the integer label (compared as float32, as Keras)."""
    y_pred = _pred(y_pred)
    labels = _sparse_labels(y_true, y_pred, "sparse_categorical_accuracy").astype(y_pred.dtype)
    return (labels == np.argmax(y_pred, axis=-1).astype(y_pred.dtype)).astype(np.float32)


def in_top_k(targets, predictions, k):
    """Keras's in_top_k on the torch backend: target t of each row (n,) is in the top k of
    predictions (n, c) when its value is >= the k-th largest value, so every class tied at
    the boundary counts. torch sorts NaN above every number (a NaN target is never in the
    top k); k > c counts every class, as the TensorFlow backend (torch raises)."""
    target_values = np.take_along_axis(predictions, targets[:, None], axis=-1)
    above = (predictions > target_values) | np.isnan(predictions)
    return (above.sum(axis=-1) < k) & ~np.isnan(target_values[:, 0])


def _check_k(k, fn_name):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{fn_name}: k must be a positive integer, got {k!r}")


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where argmax(y_true) (one-hot) is among the k largest predictions (ties: in_top_k)."""
    _check_k(k, "top_k_categorical_accuracy")
    y_pred, y_true = _pred(y_pred), np.asarray(y_true)
    _check_same_shape(y_true, y_pred, "top_k_categorical_accuracy", "one-hot y_true (integer labels: "
                      "use sparse_top_k_categorical_accuracy)")
    if y_pred.ndim < 2:
        raise ValueError(f"top_k_categorical_accuracy: y_pred must be (n, classes), got shape {y_pred.shape}")
    labels = np.argmax(y_true, axis=-1)
    hits = in_top_k(labels.reshape(-1), y_pred.reshape(-1, y_pred.shape[-1]), k)
    return hits.reshape(labels.shape).astype(np.float32)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5, from_sorted_ids=False):
    """1 where the integer label is among the k largest predictions (ties: in_top_k), or,
    with from_sorted_ids, among the first k of y_pred's class ids (sorted by score)."""
    name = "sparse_top_k_categorical_accuracy"
    _check_k(k, name)
    y_pred, y_true = _pred(y_pred), np.asarray(y_true)
    if y_pred.ndim < 2:
        raise ValueError(f"{name}: y_pred must be (n, classes), got shape {y_pred.shape}")
    flat_pred = y_pred.reshape(-1, y_pred.shape[-1])
    if y_true.size != len(flat_pred):
        raise ValueError(f"{name}: {y_true.size} labels (shape {y_true.shape}) for {len(flat_pred)} "
                         f"rows of predictions (shape {y_pred.shape})")
    if from_sorted_ids:
        labels = y_true.reshape(-1, 1).astype(y_pred.dtype)
        hits = (labels == flat_pred[:, :k]).any(axis=-1)
    else:
        hits = in_top_k(_class_ids(y_true, y_pred.shape[-1], name).reshape(-1), flat_pred, k)
    return hits.reshape(y_true.shape).astype(np.float32)


def _regression_pair(y_true, y_pred, fn_name):
    """y_true and y_pred as float32 of one shape (after Keras's squeeze or expand)."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(_float32(y_true), _float32(y_pred))
    _check_same_shape(y_true, y_pred, fn_name)
    return y_true, y_pred


def mean_squared_error(y_true, y_pred):
    """mean((y_true - y_pred)^2) over the last axis."""
    y_true, y_pred = _regression_pair(y_true, y_pred, "mean_squared_error")
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_true - y_pred|) over the last axis."""
    y_true, y_pred = _regression_pair(y_true, y_pred, "mean_absolute_error")
    return np.mean(np.abs(y_true - y_pred), axis=-1)


# The cross-entropies as Keras's torch backend computes them: probabilities clipped to
# [eps, 1 - eps] in float32 (categorical: first divided by their sum), logs in float64.
# TODO(lead): share these per-sample values with fastlstm/losses.py (one place).


def _clipped(p):
    return np.clip(p, np.float32(EPSILON), np.float32(1 - EPSILON))


def _log_probabilities(y_pred, from_logits):
    """log of the class probabilities (n, ..., k), float64."""
    if from_logits:
        z = y_pred.astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.log(_clipped(y_pred / y_pred.sum(axis=-1, keepdims=True)).astype(np.float64))


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """mean over `axis` of -(t log p + (1 - t) log(1 - p)); y_true and y_pred of one shape."""
    y_pred = _float32(y_pred)
    y_true = _float32(y_true)
    if label_smoothing:
        y_true = y_true * np.float32(1 - label_smoothing) + np.float32(0.5 * label_smoothing)
    if y_true.shape != y_pred.shape:
        raise ValueError("Arguments `target` and `output` must have the same shape. "
                         f"Received: target.shape={y_true.shape}, output.shape={y_pred.shape}")
    t = y_true.astype(np.float64)
    if from_logits:  # max(z, 0) - z t + log(1 + exp(-|z|)), stable for any z
        z = y_pred.astype(np.float64)
        per_element = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    else:
        p = _clipped(y_pred).astype(np.float64)  # log(1 - p) as log1p(-p), as torch
        per_element = -(t * np.log(p) + (1 - t) * np.log1p(-p))
    return np.mean(per_element, axis=axis).astype(np.float32)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """-sum(y_true * log(p)) over the classes (one-hot or soft y_true of y_pred's shape)."""
    if isinstance(axis, bool) or axis not in (-1, np.ndim(y_pred) - 1):
        raise ValueError(f"categorical_crossentropy: only the last axis holds classes here, got axis={axis!r}")
    y_pred = _float32(y_pred)
    y_true = _float32(y_true)
    if y_pred.shape[-1:] == (1,):
        warnings.warn("In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, "
                      f"num_classes) with num_classes > 1. Received: y_pred.shape={y_pred.shape}. "
                      "Consider using 'binary_crossentropy' if you only have 2 classes.",
                      SyntaxWarning, stacklevel=2)
    if label_smoothing:
        y_true = y_true * np.float32(1 - label_smoothing) + np.float32(label_smoothing / y_true.shape[-1])
    if y_true.shape != y_pred.shape:
        raise ValueError("Arguments `target` and `output` must have the same shape. "
                         f"Received: target.shape={y_true.shape}, output.shape={y_pred.shape}")
    return (-(y_true * _log_probabilities(y_pred, from_logits)).sum(axis=-1)).astype(np.float32)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """-log(p[label]) per sample; labels equal to ignore_class give 0."""
    if isinstance(axis, bool) or axis not in (-1, np.ndim(y_pred) - 1):
        raise ValueError(f"sparse_categorical_crossentropy: only the last axis holds classes here, got axis={axis!r}")
    y_pred = _float32(y_pred)
    labels = _sparse_labels(y_true, y_pred, "sparse_categorical_crossentropy")
    valid = np.ones(labels.shape, bool) if ignore_class is None else labels != ignore_class
    ids = _class_ids(np.where(valid, labels, 0), y_pred.shape[-1], "sparse_categorical_crossentropy")
    log_p = _log_probabilities(y_pred, from_logits)
    values = -np.take_along_axis(log_p, ids[..., None], axis=-1)[..., 0]
    return np.where(valid, values, 0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Base classes


def _float_dtype(dtype):
    try:
        dt = np.dtype(dtype or "float32")
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f":
        raise ValueError(f"a metric's dtype must be a float dtype (float16, float32, float64), got {dtype!r}")
    return dt


class Metric:
    """A metric's state and API as Keras's: update_state(...) accumulates, result() reads,
    reset_state() zeroes every state array made by _add_state; calling the metric updates
    and returns the result."""

    def __init__(self, dtype=None, name=None):
        self.name = name or _auto_name(type(self).__name__)
        self._dtype = _float_dtype(dtype)
        self._states = []

    @property
    def dtype(self):
        return self._dtype.name

    def _add_state(self, shape=()):
        state = np.zeros(shape, self._dtype)
        self._states.append(state)
        return state

    def _add_to(self, state, batch_value):
        """state += batch_value, the batch's (float64) sum rounded to dtype first, as Keras adds
        a float32 batch sum to its float32 variable."""
        state += np.asarray(batch_value).astype(self._dtype)

    def update_state(self, *args, **kwargs):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def reset_state(self):
        for state in self._states:
            state[...] = 0

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


def _value(x):
    """A result as Keras's: a Python float for a scalar, a float32 array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x.copy()


def _cast(values, dtype):
    """Values rounded to the metric's dtype first, as Keras casts them."""
    return np.asarray(values).astype(dtype)


def _samplewise(values, sample_weight, reduce_fn):
    """Keras's reduce_to_samplewise_values: values (n, ...) weighted by sample_weight (of
    values' rank or fewer axes), both reduced to (n,) with reduce_fn; float64."""
    values = np.asarray(values, np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, np.float64)
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        w_ndim = sample_weight.ndim
        if values.ndim > w_ndim:
            values = reduce_fn(values, axis=tuple(range(w_ndim, values.ndim)))
        try:
            sample_weight = np.broadcast_to(sample_weight, values.shape)
        except ValueError:
            raise ValueError(f"sample_weight of shape {sample_weight.shape} does not match values of "
                             f"shape {values.shape}") from None
        values = values * sample_weight
        if w_ndim > 1:
            sample_weight = reduce_fn(sample_weight, axis=tuple(range(1, w_ndim)))
    if values.ndim > 1:
        values = reduce_fn(values, axis=tuple(range(1, values.ndim)))
    return values, sample_weight


class Sum(Metric):
    """The (weighted) sum of the values."""

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self._add_state()

    def update_state(self, values, sample_weight=None):
        values, _ = _samplewise(_cast(values, self._dtype), sample_weight, np.sum)
        self._add_to(self.total, values.sum())

    def result(self):
        return _value(self.total)


class Mean(Metric):
    """The (weighted) mean of the values: total / count, 0 before any count."""

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self._add_state()
        self.count = self._add_state()

    def update_state(self, values, sample_weight=None):
        values, sample_weight = _samplewise(_cast(values, self._dtype), sample_weight, np.mean)
        self._add_to(self.total, values.sum())
        if sample_weight is not None:
            self._add_to(self.count, sample_weight.sum())
        else:
            self._add_to(self.count, len(values) if values.ndim else 1)

    def result(self):
        return _value(_divide_no_nan(self.total, self.count))


class MeanMetricWrapper(Mean):
    """The mean of fn(y_true, y_pred, **kwargs), a per-sample metric function."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype)
        self._fn, self._fn_kwargs = fn, kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "fn": self._fn, **self._fn_kwargs}


# ---------------------------------------------------------------------------------------------
# Accuracy, cross-entropy and regression metrics (Keras's MeanMetricWrappers of its functions)


class _MeanOfFunction(MeanMetricWrapper):
    """A MeanMetricWrapper of one of the functions above: its config is its name, dtype and
    the function's options (no "fn")."""

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, **self._fn_kwargs}


class Accuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold


class CategoricalAccuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class TopKCategoricalAccuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        _check_k(k, "TopKCategoricalAccuracy")
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)
        self.k = k


class SparseTopKCategoricalAccuracy(_MeanOfFunction):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None, from_sorted_ids=False):
        _check_k(k, "SparseTopKCategoricalAccuracy")
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k,
                         from_sorted_ids=from_sorted_ids)
        self.k, self.from_sorted_ids = k, from_sorted_ids

    def get_config(self):  # Keras writes from_sorted_ids only when True
        config = super().get_config()
        if not self.from_sorted_ids:
            del config["from_sorted_ids"]
        return config


class BinaryCrossentropy(_MeanOfFunction):
    _direction = "down"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(binary_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing)
        self.from_logits, self.label_smoothing = from_logits, label_smoothing


class CategoricalCrossentropy(_MeanOfFunction):
    _direction = "down"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0,
                 axis=-1):
        super().__init__(categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)
        self.from_logits, self.label_smoothing, self.axis = from_logits, label_smoothing, axis


class SparseCategoricalCrossentropy(_MeanOfFunction):
    """With ignore_class, ignored samples add 0 and count 1 unless a sample_weight is given,
    which they then zero (as Keras: the values' mask only reaches the weights)."""
    _direction = "down"  # for monitors in mode "auto" (EarlyStopping, ...)

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False,
                 ignore_class=None, axis=-1):
        super().__init__(sparse_categorical_crossentropy, name=name, dtype=dtype, from_logits=from_logits,
                         ignore_class=ignore_class, axis=axis)
        self.from_logits, self.ignore_class, self.axis = from_logits, ignore_class, axis

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is not None and sample_weight is not None:
            labels = _sparse_labels(y_true, _float32(y_pred), "sparse_categorical_crossentropy")
            valid = (labels != self.ignore_class).astype(self._dtype)
            valid, sample_weight = squeeze_or_expand_to_same_rank(valid, _cast(sample_weight, self._dtype))
            sample_weight = sample_weight * valid
        super().update_state(y_true, y_pred, sample_weight)


class MeanSquaredError(_MeanOfFunction):
    _direction = "down"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name=name, dtype=dtype)


class MeanAbsoluteError(_MeanOfFunction):
    _direction = "down"  # for monitors in mode "auto" (EarlyStopping, ...)
    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, name=name, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Confusion-matrix metrics


def _parse_thresholds(thresholds, default):
    """A threshold or a list/tuple of them, each in [0, 1] -> list; None -> [default]."""
    if thresholds is None:
        return [default]
    listed = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    bad = [t for t in listed if t is None or not 0 <= t <= 1]
    if bad:
        raise ValueError(f"Threshold values must be in [0, 1]. Received: {bad}")
    return [float(t) for t in listed]


def _evenly_spaced(thresholds):
    """Keras's test for the bucket method: >= 3 thresholds close to 0, 1/(T-1), ..., 1."""
    n = len(thresholds)
    return n >= 3 and np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1), atol=EPSILON)


def _filter_top_k(y_pred, k):
    """y_pred with all but the k largest values of each row set to NEG_INF. Of values tied at
    the boundary the lowest indices are kept (TensorFlow's documented rule; torch's choice
    among exact ties is unspecified)."""
    if k > y_pred.shape[-1]:
        raise ValueError(f"top_k={k} is larger than the {y_pred.shape[-1]} classes of y_pred")
    order = np.argsort(-y_pred, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(y_pred.shape, bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return np.where(keep, y_pred, np.float32(NEG_INF))


def confusion_counts(y_true, y_pred, thresholds, evenly_spaced=False, sample_weight=None, top_k=None,
                     class_id=None, multi_label=False, label_weights=None):
    """Weighted (tp, fp, tn, fn) of one batch at each threshold: float64 arrays (T,), or (T, labels)
    with multi_label, as Keras's update_confusion_matrix_variables. A prediction is positive
    when > the threshold (float32 comparison), a label when nonzero. Evenly spaced thresholds
    use Keras's bucket method: p (clipped to [0, 1]) counts at thresholds 0..b for bucket
    b = ceil(p * (T - 1)) - 1 in float32 (b >= 0 with end thresholds outside [0, 1]); for a
    value within a float32 rounding of a threshold that rule, not '>', decides, as in Keras."""
    y_true = _float32(y_true)
    y_pred = _float32(y_pred)
    y_pred, y_true = squeeze_or_expand_to_same_rank(y_pred, y_true)
    _check_same_shape(y_true, y_pred, "confusion matrix metrics")
    if sample_weight is not None:
        sample_weight = _float32(sample_weight)[..., None]
        _, sample_weight = squeeze_or_expand_to_same_rank(y_true, sample_weight, expand_rank_1=False)
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        if y_pred.ndim == 1:
            raise ValueError("When class_id is provided, y_pred must be a 2D array with shape "
                             f"(num_samples, num_classes), found shape: {y_pred.shape}")
        if not -y_pred.shape[-1] <= class_id < y_pred.shape[-1]:
            raise ValueError(f"class_id={class_id} is out of range for {y_pred.shape[-1]} classes")
        y_true, y_pred = y_true[..., class_id, None], y_pred[..., class_id, None]
    if multi_label and y_pred.ndim != 2:
        raise ValueError(f"`y_pred` must have rank 2 when `multi_label=True`. Found rank {y_pred.ndim}.")

    weights = np.ones(y_pred.shape, np.float64)  # per element
    try:
        if sample_weight is not None:
            weights = weights * np.broadcast_to(sample_weight, y_pred.shape)
        if label_weights is not None:
            weights = weights * np.broadcast_to(_float32(label_weights), y_pred.shape)
    except ValueError:
        raise ValueError(f"sample_weight / label_weights do not broadcast to y_pred's shape {y_pred.shape}") from None
    positive_label = y_true != 0
    if not multi_label:  # every label-prediction pair is one point
        y_pred, positive_label, weights = y_pred.reshape(-1), positive_label.reshape(-1), weights.reshape(-1)
    true_w = np.where(positive_label, weights, 0.0)
    false_w = np.where(positive_label, 0.0, weights)
    n_thr = len(thresholds)

    if evenly_spaced:
        with_ends = thresholds[0] < 0 or thresholds[-1] > 1
        bucket = np.ceil(np.clip(y_pred, 0, 1) * np.float32(n_thr - 1)) - 1
        if with_ends:  # every prediction is above the first threshold, -eps
            bucket = np.maximum(bucket, 0)
        inside = (bucket >= 0) & (bucket < n_thr)  # Keras drops the rest (NaN too)
        labels = y_pred.shape[1] if multi_label else 1
        column = np.broadcast_to(np.arange(labels), y_pred.shape) if multi_label else 0
        slot = np.where(inside, bucket, 0).astype(np.int64) * labels + column
        def above(w):  # sum of w over predictions in buckets >= i, for each threshold i
            per_bucket = np.bincount(slot[inside], w[inside], minlength=n_thr * labels).reshape(n_thr, labels)
            summed = np.cumsum(per_bucket[::-1], axis=0)[::-1]
            return summed if multi_label else summed[:, 0]
        tp, fp = above(true_w), above(false_w)
    else:
        thr = _float32(thresholds).reshape((n_thr,) + (1,) * y_pred.ndim)
        positive_pred = y_pred[None] > thr  # (T, points) or (T, n, labels)
        tp = np.where(positive_pred, true_w, 0.0).sum(axis=1)
        fp = np.where(positive_pred, false_w, 0.0).sum(axis=1)
    return tp, fp, false_w.sum(axis=0) - fp, true_w.sum(axis=0) - tp


class _ConfusionMatrixConditionCount(Metric):
    """One of tp, fp, tn, fn accumulated at each threshold (default 0.5)."""

    _condition = None  # index into confusion_counts' (tp, fp, tn, fn)

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = _parse_thresholds(thresholds, 0.5)
        self._evenly = _evenly_spaced(self.thresholds)
        self.accumulator = self._add_state(len(self.thresholds))

    def update_state(self, y_true, y_pred, sample_weight=None):
        counts = confusion_counts(y_true, y_pred, self.thresholds, self._evenly, sample_weight)
        self._add_to(self.accumulator, counts[self._condition])

    def result(self):
        return _value(self.accumulator[0] if len(self.thresholds) == 1 else self.accumulator)

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConfusionMatrixConditionCount):
    _condition = 0


class FalsePositives(_ConfusionMatrixConditionCount):
    _condition = 1


class TrueNegatives(_ConfusionMatrixConditionCount):
    _condition = 2


class FalseNegatives(_ConfusionMatrixConditionCount):
    _condition = 3


class _PrecisionRecall(Metric):
    """tp / (tp + fp) (precision) or tp / (tp + fn) (recall) at each threshold, over the top_k
    predictions of each row and/or the class class_id when given."""

    _second = None  # the second count: (its state's name, its index in confusion_counts)

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if top_k is not None:
            _check_k(top_k, type(self).__name__)
        self.init_thresholds, self.top_k, self.class_id = thresholds, top_k, class_id
        self.thresholds = _parse_thresholds(thresholds, 0.5 if top_k is None else NEG_INF)
        self._evenly = _evenly_spaced(self.thresholds)
        self.true_positives = self._add_state(len(self.thresholds))
        setattr(self, self._second[0], self._add_state(len(self.thresholds)))

    def update_state(self, y_true, y_pred, sample_weight=None):
        counts = confusion_counts(y_true, y_pred, self.thresholds, self._evenly, sample_weight,
                                  top_k=self.top_k, class_id=self.class_id)
        self._add_to(self.true_positives, counts[0])
        self._add_to(getattr(self, self._second[0]), counts[self._second[1]])

    def result(self):
        tp = self.true_positives
        r = _divide_no_nan(tp, tp + getattr(self, self._second[0]))
        return _value(r[0] if len(self.thresholds) == 1 else r)

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}


class Precision(_PrecisionRecall):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    _second = ("false_positives", 1)


class Recall(_PrecisionRecall):
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)
    _second = ("false_negatives", 3)


_CURVES = {"roc": "ROC", "ROC": "ROC", "pr": "PR", "PR": "PR", "prgain": "PRGAIN", "PRGAIN": "PRGAIN"}
_SUMMATIONS = {"interpolation": "interpolation", "Interpolation": "interpolation", "majoring": "majoring",
               "Majoring": "majoring", "minoring": "minoring", "Minoring": "minoring"}


class AUC(Metric):
    """Area under the ROC, PR or PR-gain curve from tp/fp/tn/fn counted at num_thresholds
    thresholds (0 - eps, 1/(T-1), ..., 1 + eps) or at the given ones (plus those two ends).
    summation_method: 'interpolation' (trapezoids; for PR, Davis & Goadrich's interpolation
    of tp and fp), 'minoring' (lower rectangles), 'majoring' (upper)."""
    _direction = "up"  # for monitors in mode "auto" (EarlyStopping, ...)

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None,
                 dtype=None, thresholds=None, multi_label=False, num_labels=None, label_weights=None,
                 from_logits=False):
        if curve not in _CURVES:
            raise ValueError(f'Invalid AUC curve value: "{curve}". Expected values are ["PR", "ROC", "PRGAIN"]')
        if summation_method not in _SUMMATIONS:
            raise ValueError(f'Invalid AUC summation method value: "{summation_method}". '
                             'Expected values are ["interpolation", "majoring", "minoring"]')
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(float(t) for t in thresholds)
            self.num_thresholds = len(inner) + 2
            self._evenly = _evenly_spaced(np.array([0.0] + inner + [1.0]))
        else:
            if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) \
                    or num_thresholds <= 1:
                raise ValueError("Argument `num_thresholds` must be an integer > 1. "
                                 f"Received: num_thresholds={num_thresholds}")
            self.num_thresholds = int(num_thresholds)
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            self._evenly = True
        # end thresholds just outside [0, 1], so predictions of exactly 0 and 1 are counted
        self._thresholds = np.array([0.0 - EPSILON] + inner + [1.0 + EPSILON])
        self.curve, self.summation_method = _CURVES[curve], _SUMMATIONS[summation_method]
        super().__init__(name=name, dtype=dtype)
        self.multi_label, self.num_labels = multi_label, num_labels
        self.label_weights = None if label_weights is None else np.asarray(label_weights, self._dtype)
        self._from_logits = from_logits
        self._num_labels = None  # labels the state was built for (multi_label)
        if not multi_label and num_labels:
            raise ValueError("`num_labels` is needed only when `multi_label` is True.")
        if not multi_label or num_labels:
            self._build(num_labels)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def _build(self, num_labels):
        self._num_labels = num_labels if self.multi_label else None
        shape = (self.num_thresholds, num_labels) if self.multi_label else (self.num_thresholds,)
        self.true_positives = self._add_state(shape)
        self.false_positives = self._add_state(shape)
        self.true_negatives = self._add_state(shape)
        self.false_negatives = self._add_state(shape)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = _float32(y_pred)
        if self.multi_label:
            if y_pred.ndim != 2:
                raise ValueError("`y_pred` must have rank 2 when `multi_label=True`. "
                                 f"Found rank {y_pred.ndim}. Full shape received for `y_pred`: {y_pred.shape}")
            if self._num_labels is None:
                self._build(y_pred.shape[1])
            elif y_pred.shape[1] != self._num_labels:
                raise ValueError(f"AUC(multi_label=True) was built for {self._num_labels} labels, "
                                 f"got y_pred of shape {y_pred.shape}")
        if self._from_logits:  # sigmoid in float64, rounded to float32
            y_pred = (1 / (1 + np.exp(-y_pred.astype(np.float64)))).astype(np.float32)
        counts = confusion_counts(y_true, y_pred, self._thresholds, self._evenly, sample_weight,
                                  multi_label=self.multi_label,
                                  label_weights=None if self.multi_label else self.label_weights)
        for state, batch in zip((self.true_positives, self.false_positives, self.true_negatives,
                                 self.false_negatives), counts):
            self._add_to(state, batch)

    def _average_labels(self, by_threshold):
        """Sum over the thresholds; with multi_label the mean over labels (label_weights-weighted)."""
        if not self.multi_label:
            return by_threshold.sum()
        by_label = by_threshold.sum(axis=0)
        if self.label_weights is None:
            return by_label.mean()
        return _divide_no_nan((by_label * self.label_weights).sum(), self.label_weights.sum())

    def _interpolated_pr_auc(self):
        """Davis & Goadrich: tp and p = tp + fp linear between thresholds A > B, so precision's
        integral over one interval is slope * (dtp + intercept * log(p_A / p_B)) / positives."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        p_ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _divide_no_nan(p[:-1], np.maximum(p[1:], 0)),
                           np.ones_like(p[1:]))
        increment = _divide_no_nan(slope * (dtp + intercept * np.log(p_ratio)),
                                   np.maximum(tp[1:] + fn[1:], 0))
        return self._average_labels(increment)

    def result(self):
        if self._num_labels is None and self.multi_label:
            return 0.0  # nothing seen yet
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _value(self._interpolated_pr_auc())
        tp, fp, tn, fn = self.true_positives, self.false_positives, self.true_negatives, self.false_negatives
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _divide_no_nan(tp, tp + fp)
        else:  # PRGAIN: recall and precision gains, scaled by positives / negatives
            scale = _divide_no_nan(tp + fn, tn + fp)
            recall_gain = np.where(tp == 0, 0, 1 - scale * _divide_no_nan(fn, tp))
            precision_gain = np.where(tp == 0, 1, 1 - scale * _divide_no_nan(fp, tp))
            x, y = np.maximum(recall_gain, 0), precision_gain
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / np.float32(2)
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return _value(self._average_labels((x[:-1] - x[1:]) * heights))

    def reset_state(self):
        if self._num_labels is not None or not self.multi_label:
            super().reset_state()

    def get_config(self):
        config = {**super().get_config(), "num_thresholds": self.num_thresholds, "curve": self.curve,
                  "summation_method": self.summation_method, "multi_label": self.multi_label,
                  "num_labels": self.num_labels,
                  "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
                  "from_logits": self._from_logits}
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


# ---------------------------------------------------------------------------------------------
# Identifiers: get, and compile(metrics=...)

ALL_OBJECTS = (Metric, Mean, Sum, MeanMetricWrapper, MeanSquaredError, MeanAbsoluteError, AUC,
               FalseNegatives, FalsePositives, Precision, Recall, TrueNegatives, TruePositives,
               BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, Accuracy,
               BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, TopKCategoricalAccuracy,
               SparseTopKCategoricalAccuracy)
# Keras's names for metric strings: class names and their snake case, plus its aliases
ALL_OBJECTS_DICT = {**{c.__name__: c for c in ALL_OBJECTS}, **{to_snake_case(c.__name__): c for c in ALL_OBJECTS},
                    "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy, "mse": MeanSquaredError,
                    "MSE": MeanSquaredError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError}
# Keras metrics fastlstm does not have yet (a clearer error than "could not interpret")
_KERAS_ONLY = ("RootMeanSquaredError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
               "CosineSimilarity", "LogCoshError", "R2Score", "PrecisionAtRecall", "RecallAtPrecision",
               "SensitivityAtSpecificity", "SpecificityAtSensitivity", "ConcordanceCorrelation",
               "PearsonCorrelation", "Hinge", "SquaredHinge", "CategoricalHinge", "KLDivergence", "Poisson",
               "F1Score", "FBetaScore", "IoU", "BinaryIoU", "MeanIoU", "OneHotIoU", "OneHotMeanIoU")
_KERAS_ONLY_NAMES = {*_KERAS_ONLY, *map(to_snake_case, _KERAS_ONLY), "mape", "MAPE", "msle", "MSLE"}


def _unknown(identifier):
    if isinstance(identifier, str) and identifier in _KERAS_ONLY_NAMES:
        return ValueError(f"Keras's metric {identifier!r} is not supported by fastlstm yet")
    return ValueError(f"Could not interpret metric identifier: {identifier}")


def get(identifier):
    """Keras's metrics.get: None -> None; a name (class name or its snake case: 'auc',
    'BinaryAccuracy', 'mse', ...) or a class -> a new instance with its default name; a
    {'class_name', 'config'} dict -> from_config; a metric object or a function as given."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        cls = ALL_OBJECTS_DICT.get(identifier.get("class_name"))
        if cls is None:
            raise _unknown(identifier.get("class_name"))
        return cls.from_config(identifier.get("config", {}))
    obj = ALL_OBJECTS_DICT.get(identifier) if isinstance(identifier, str) else identifier
    if not callable(obj):
        raise _unknown(identifier)
    return obj() if inspect.isclass(obj) else obj


def is_binary_or_sparse_categorical(y_true, y_pred):
    """Keras's compile-time guess from the first batch's shapes (for 'accuracy' here, and for
    loss='crossentropy'/'ce'): binary when y_pred is (..., 1); sparse when y_true has a lower
    rank, or ends in 1 while y_pred has several classes."""
    t_shape, p_shape = np.shape(y_true), np.shape(y_pred)
    is_binary = p_shape[-1:] == (1,)
    is_sparse = len(t_shape) < len(p_shape) or (t_shape[-1:] == (1,) and p_shape[-1] > 1)
    return is_binary, is_sparse


def compile_metric(identifier, y_true, y_pred):
    """Keras's compile-time metric (compile_utils.get_metric) from the first batch: 'accuracy'
    or 'acc' (any case) becomes BinaryAccuracy (y_pred (n, 1)), SparseCategoricalAccuracy
    (labels of a lower rank, or (n, 1) labels for k > 1 classes) or CategoricalAccuracy; other
    identifiers go through get(); a plain function becomes a MeanMetricWrapper. The name is the
    string the user wrote ('acc' stays acc), else the object's name or the function's name."""
    if identifier is None:
        raise ValueError("Expected metric, received `None`")
    if str(identifier).lower() in ("accuracy", "acc"):
        is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
        cls = BinaryAccuracy if is_binary else SparseCategoricalAccuracy if is_sparse else CategoricalAccuracy
        metric = cls(name=str(identifier))
    else:
        metric = get(identifier)
    name = identifier if isinstance(identifier, str) else _object_name(metric)
    if not isinstance(metric, Metric):
        metric = MeanMetricWrapper(metric)
    metric.name = name
    return metric


def check_metrics_argument(metrics, argument_name="metrics"):
    """compile()'s checks, at compile time: metrics (or weighted_metrics) is None, a list, a
    tuple or (one output) a dict; each entry a known name, a Metric, a class or a callable.
    Raises Keras's ValueError otherwise. Returns the flat list of entries (a dict's values in
    sorted-key order, nested lists flattened, as Keras's tree.flatten)."""
    if metrics and not isinstance(metrics, (list, tuple, dict)):
        raise ValueError(f"Expected `{argument_name}` argument to be a list, tuple, or dict. "
                         f"Received instead: {argument_name}={metrics} of type {type(metrics)}")
    flat = _flatten(metrics) if metrics else []
    for m in flat:
        if m is None:
            raise ValueError("Expected metric, received `None`")
        if isinstance(m, str) and m.lower() not in ("accuracy", "acc") and m not in ALL_OBJECTS_DICT:
            raise _unknown(m)
        if not isinstance(m, str) and not callable(m):
            raise _unknown(m)
    return flat


def _flatten(structure):
    if isinstance(structure, dict):
        return [m for key in sorted(structure) for m in _flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [m for item in structure for m in _flatten(item)]
    return [structure]


def _with_mask(sample_weight, mask):
    """Sample weights with an output mask folded in, as Keras's metrics take them."""
    if mask is None:
        return sample_weight
    m = np.asarray(mask, np.float32)
    if sample_weight is None:
        return m
    sw = np.asarray(sample_weight, np.float32)
    return m * sw.reshape(sw.shape + (1,) * (m.ndim - sw.ndim))


class CompileMetrics:
    """What compile(metrics=..., weighted_metrics=...) keeps for a single-output model, as
    Keras's CompileMetrics: the metrics are resolved on the first batch (compile_metric);
    `metrics` are updated without sample weights and `weighted_metrics` with them; result()
    maps each name to its value, a repeated name getting _1, _2, ... (a weighted metric
    whose name is taken: weighted_<name>)."""

    name = "compile_metrics"  # as Keras: model.metrics_names == ["loss", "compile_metrics"]

    def __init__(self, metrics=None, weighted_metrics=None):
        self._metrics = check_metrics_argument(metrics)
        self._weighted = check_metrics_argument(weighted_metrics, "weighted_metrics")
        self.built = False
        self.unweighted, self.weighted = [], []

    @property
    def metrics(self):
        return self.unweighted + self.weighted

    def build(self, y_true, y_pred):
        self.unweighted = [compile_metric(m, y_true, y_pred) for m in self._metrics]
        self.weighted = [compile_metric(m, y_true, y_pred) for m in self._weighted]
        self.built = True

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        """mask: the output's (Keras's y_pred._keras_mask), which every metric applies."""
        if not self.built:
            self.build(y_true, y_pred)
        for m in self.unweighted:
            m.update_state(y_true, y_pred, _with_mask(None, mask))
        for m in self.weighted:
            m.update_state(y_true, y_pred, _with_mask(sample_weight, mask))

    def reset_state(self):
        for m in self.metrics:
            m.reset_state()

    def result(self):
        results, uses = {}, {}
        for weighted, group in ((False, self.unweighted), (True, self.weighted)):
            for m in group:
                name = m.name
                if name in uses and weighted:
                    name = f"weighted_{m.name}"
                if name in uses:
                    uses[name] += 1
                    name = f"{name}_{uses[name] - 1}"
                else:
                    uses[name] = 1
                results[name] = m.result()
        return results
