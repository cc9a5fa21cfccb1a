"""`to_categorical`, as `keras.utils.to_categorical` (Keras 2: `keras.utils.np_utils`)."""
import numpy as np


def to_categorical(x, num_classes=None):
    """One-hot float64 array of integer labels `x`, as `keras.utils.to_categorical`: the
    class axis last, a trailing axis of 1 dropped, `num_classes` by default max(x) + 1.

    Like Keras it reads digit strings and object arrays of numbers; labels that are not
    whole numbers in [0, num_classes) are a ValueError (Keras truncates fractions and
    fails on an out-of-range index, or wraps a negative one).
    """
    y = np.asarray(x)
    if y.dtype.kind == "O":
        y = np.array(y.tolist())  # e.g. a column of Python ints held as objects
    if y.dtype.kind in "US":
        try:
            y = y.astype(np.int64)
        except ValueError as e:
            raise ValueError(f"labels must be integers, got {y.dtype} values that are not") from e
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError("labels must be whole numbers (no NaN, inf or fractions)")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    shape = y.shape
    if shape and shape[-1] == 1 and len(shape) > 1:
        shape = shape[:-1]
    y = y.reshape(-1)
    if not num_classes:
        num_classes = int(np.max(y)) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), found {y.min()}..{y.max()}")
    out = np.zeros((y.shape[0], num_classes))
    out[np.arange(y.shape[0]), y] = 1
    return out.reshape(shape + (num_classes,))
