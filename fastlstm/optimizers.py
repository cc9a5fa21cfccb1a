"""Adam in Keras's form, float32, updating every parameter densely."""
import numpy as np

from fastlstm import _core


class Adam:
    """Keras's Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        for name, v in (("learning_rate", learning_rate), ("epsilon", epsilon)):
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name, v in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon
        self.iterations = 0
        self._m = self._v = None

    def apply(self, grads, weights):
        """One step: updates each array in `weights` in place from `grads`."""
        if self._m is None:
            self._m = [np.zeros_like(w) for w in weights]
            self._v = [np.zeros_like(w) for w in weights]
        f32 = np.float32
        t = f32(self.iterations + 1)
        b1, b2 = f32(self.beta_1), f32(self.beta_2)
        alpha = f32(self.learning_rate) * np.sqrt(f32(1) - b2 ** t) / (f32(1) - b1 ** t)
        one_b1, one_b2, eps = f32(1 - self.beta_1), f32(1 - self.beta_2), f32(self.epsilon)
        for g, w, m, v in zip(grads, weights, self._m, self._v):
            # in C++, one pass: m += (g - m) * one_b1; v += (g * g - v) * one_b2;
            # w -= (m * alpha) / (sqrt(v) + eps), each operation rounded to float32 like numpy
            _core.adam_update(w, np.ascontiguousarray(g, dtype=np.float32), m, v, alpha, one_b1, one_b2, eps)
        self.iterations += 1


def get(optimizer):
    if isinstance(optimizer, Adam):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() == "adam":
        return Adam()
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or fastlstm.optimizers.Adam(...)")
