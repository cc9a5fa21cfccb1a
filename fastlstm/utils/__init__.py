"""Random state shared by initializers and shuffling; `set_random_seed` makes runs repeatable."""
import random

import numpy as np

from fastlstm.backend import clear_session  # noqa: F401  (Keras has keras.utils.clear_session too)

_rng = np.random.default_rng()


def set_random_seed(seed):
    """Seed fastlstm's generator (weight initialisation, shuffling), `random` and `np.random`.

    The same seed and the same training calls give bitwise identical weights, for any
    number of threads.
    """
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _rng = np.random.default_rng(int(seed))
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)


def rng():
    """The generator fastlstm draws from."""
    return _rng
