"""The IMDB movie-review sentiment dataset, as `keras.datasets.imdb` (same arrays, same args)."""
import json
import warnings

import numpy as np

from fastlstm.datasets._files import KERAS_DATASETS_URL, find_file, load_npz
from fastlstm.datasets._sequences import prepare

ORIGIN = KERAS_DATASETS_URL
# Keras's published hashes: a sha256 for the arrays, only an md5 for the word index (a
# JSON file, read with json, never unpickled).
NPZ_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
WORD_INDEX_MD5 = "bfafd718b763782e994055a2d397834f"


def load_data(path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113,
              start_char=1, oov_char=2, index_from=3, **kwargs):
    """Load the 25,000 training and 25,000 test IMDB reviews, labelled 1 (positive) or 0.

    Returns `(x_train, y_train), (x_test, y_test)`: object arrays of lists of word ids and
    the labels, exactly as Keras returns them. The training and then the test set are
    shuffled by one generator seeded with `seed`; each sequence starts with `start_char`;
    word ids are shifted by `index_from`; sequences of `maxlen` or more words are dropped
    (a set left empty is a ValueError); ids outside [skip_top, num_words) become `oov_char`
    (or are removed when it is None). Other keyword arguments are ignored, as Keras 3
    ignores them, with a warning.

    `path`: the file name, looked up in $FASTLSTM_DATA_DIR, the Keras cache, fastlstm's
    cache, else downloaded (sha256-checked); or a path to the file or to its folder.
    """
    if kwargs:
        warnings.warn(f"imdb.load_data ignores the arguments {sorted(kwargs)}, as Keras 3 does",
                      stacklevel=2)
    f = load_npz(find_file(path, "imdb.npz", ORIGIN + "imdb.npz", NPZ_SHA256))
    (x_train, y_train), (x_test, y_test) = prepare(
        [(f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])],
        num_words, skip_top, maxlen, seed, start_char, oov_char, index_from)
    labels = np.concatenate([y_train, y_test])  # as Keras: one dtype for both sets
    return ((np.array(x_train, dtype="object"), labels[:len(x_train)]),
            (np.array(x_test, dtype="object"), labels[len(x_train):]))


def get_word_index(path="imdb_word_index.json"):
    """Dict word -> index (1 = most frequent). Data ids are these plus `index_from` (3)."""
    p = find_file(path, "imdb_word_index.json", ORIGIN + "imdb_word_index.json", WORD_INDEX_MD5)
    with open(p) as f:
        return json.load(f)
