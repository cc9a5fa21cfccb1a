"""`keras.utils`: the one home of each helper is its module here (Keras's module names)."""
from fastlstm.backend import clear_session  # noqa: F401 (Keras has keras.utils.clear_session too)
from fastlstm.utils import np_utils
from fastlstm.utils.numerical_utils import to_categorical
from fastlstm.utils.progbar import Progbar
from fastlstm.utils.rng_utils import rng, set_random_seed
from fastlstm.utils.sequence_utils import pad_sequences

__all__ = ["Progbar", "clear_session", "np_utils", "pad_sequences", "rng", "set_random_seed", "to_categorical"]
