"""Keras's session state: the counters behind unique default names (`lstm`, `lstm_1`, ...),
reset by `clear_session()`. Per thread, as Keras's global state."""
import collections
import re
import threading

_state = threading.local()


def _uids():
    """This thread's counters: prefix -> how many names (or uids) it has handed out."""
    if not hasattr(_state, "uids"):
        _state.uids = collections.defaultdict(int)
    return _state.uids


def to_snake_case(name):
    """'SimpleRNN' -> 'simple_rnn', 'GlobalMaxPooling1D' -> 'global_max_pooling1d' (Keras's rule)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def auto_name(prefix):
    """A new default name: the snake_case prefix, then prefix_1, prefix_2, ... (Keras's)."""
    prefix = to_snake_case(prefix)
    uids = _uids()
    name = f"{prefix}_{uids[prefix]}" if prefix in uids else prefix
    uids[prefix] += 1
    return name


def get_uid(prefix=""):
    """1, 2, 3, ... for successive calls with the same prefix (keras.backend.get_uid)."""
    uids = _uids()
    uids[prefix] += 1
    return uids[prefix]


def clear_session(free_memory=True):
    """Reset the default-name counters (the next LSTM is `lstm` again), as Keras's."""
    _state.uids = collections.defaultdict(int)
    if free_memory:
        import gc

        gc.collect()
