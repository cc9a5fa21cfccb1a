"""Keras's weight regularizers (keras/src/regularizers/regularizers.py): L1, L2, L1L2.

A regularizer is called on a weight array and returns its penalty, computed in float32 as
Keras does (`L2: l2 * sum(square(w))`); `gradient(w)` is the penalty's gradient (float32,
w's shape), which the model adds to the weight's gradient. Layers name the regularized
weights through `Layer.weight_regularizers()`."""
import math

import numpy as np


class Regularizer:
    """The base class: `__call__(w) -> float` penalty, `gradient(w) -> array`, `get_config()`."""

    def __call__(self, x):
        return 0.0

    def gradient(self, x):
        """d penalty / d x; a subclass that defines only __call__ cannot be trained."""
        raise NotImplementedError(f"{type(self).__name__} has no gradient(): fastlstm needs one to train "
                                  "with it (L1, L2 and L1L2 have theirs)")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_config(self):
        raise NotImplementedError(f"{self} does not implement get_config()")


def _factor(value, name):
    """Keras's check: a finite, non-negative number, as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or math.isinf(value) or math.isnan(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. Received: {name}={value}")
    return float(value)


def _l1(factor, x):
    return np.float32(factor) * np.sum(np.abs(x), dtype=np.float32)


def _l2(factor, x):
    return np.float32(factor) * np.sum(np.square(x, dtype=np.float32), dtype=np.float32)


def _l1_gradient(factor, x):
    return np.float32(factor) * np.sign(x).astype(np.float32)  # 0 at 0, as torch's abs


def _l2_gradient(factor, x):
    return np.float32(2 * factor) * np.asarray(x, np.float32)


class L1L2(Regularizer):
    """l1 * sum(abs(x)) + l2 * sum(square(x)); a zero factor's term is left out."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x):
        penalty = np.float32(0)
        if self.l1 != 0.0:
            penalty += _l1(self.l1, x)
        if self.l2 != 0.0:
            penalty += _l2(self.l2, x)
        return float(penalty)

    def gradient(self, x):
        g = np.zeros(np.shape(x), np.float32)
        if self.l1 != 0.0:
            g += _l1_gradient(self.l1, x)
        if self.l2 != 0.0:
            g += _l2_gradient(self.l2, x)
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """l1 * sum(abs(x)). Keras keeps l1 as a float32 tensor: its config says 0.009999999776482582."""

    def __init__(self, l1=0.01):
        self.l1 = float(np.float32(_factor(0.01 if l1 is None else l1, "l1")))

    def __call__(self, x):
        return float(_l1(self.l1, x))

    def gradient(self, x):
        return _l1_gradient(self.l1, x)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """l2 * sum(square(x))."""

    def __init__(self, l2=0.01):
        self.l2 = _factor(0.01 if l2 is None else l2, "l2")

    def __call__(self, x):
        return float(_l2(self.l2, x))

    def gradient(self, x):
        return _l2_gradient(self.l2, x)

    def get_config(self):
        return {"l2": self.l2}


l1, l2, l1_l2 = L1, L2, L1L2  # Keras 3's lower-case names are the classes

# Names `get` takes, as Keras's (class names and their snake_case; 'l1l2' is L1L2(0, 0)),
# and 'l1_l2' with the 0.01 factors Keras documents (and Keras 2 used).
_BY_NAME = {"L1": L1, "l1": L1, "L2": L2, "l2": L2, "L1L2": L1L2, "l1l2": L1L2,
            "l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}
_CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2}


def serialize(regularizer):
    """Keras's serialized form: {'module', 'class_name', 'config', 'registered_name'}."""
    if regularizer is None:
        return None
    return {"module": "keras.regularizers", "class_name": type(regularizer).__name__,
            "config": regularizer.get_config(), "registered_name": None}


def deserialize(config, custom_objects=None):
    """A regularizer from `serialize`'s dict (or a Keras config of L1, L2, L1L2)."""
    classes = {**_CLASSES, **(custom_objects or {})}
    name = config.get("class_name")
    if name not in classes:
        raise ValueError(f"Unknown regularizer {name!r}; fastlstm has {sorted(_CLASSES)}")
    return classes[name].from_config(config.get("config", {}))


def get(identifier):
    """None, a name ('l1', 'l2', 'l1_l2', 'L1L2', ...), a config dict, or a Regularizer ->
    a Regularizer or None."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}; known: {sorted(_BY_NAME)}")
        return _BY_NAME[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if isinstance(identifier, Regularizer):
        return identifier
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}: fastlstm needs a Regularizer "
                     "(L1, L2, L1L2, or a subclass with __call__ and gradient), not a bare function")
