"""The Reuters newswire topic dataset, as `keras.datasets.reuters` (same arrays, same args)."""
import json

import numpy as np

from fastlstm.datasets._files import KERAS_DATASETS_URL, find_file, load_npz
from fastlstm.datasets._sequences import prepare

ORIGIN = KERAS_DATASETS_URL
NPZ_SHA256 = "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
WORD_INDEX_SHA256 = "9b56000edc4b34a32e89fd5a23b2605594682c74efcf7d8f4e2a5514b771e633"

LABEL_NAMES = (
    "cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing", "money-supply",
    "coffee", "sugar", "trade", "reserves", "ship", "cotton", "carcass", "crude", "nat-gas",
    "cpi", "money-fx", "interest", "gnp", "meal-feed", "alum", "oilseed", "gold", "tin",
    "strategic-metal", "livestock", "retail", "ipi", "iron-steel", "rubber", "heat", "jobs",
    "lei", "bop", "zinc", "orange", "pet-chem", "dlr", "gas", "silver", "wpi", "hog", "lead",
)


def load_data(path="reuters.npz", num_words=None, skip_top=0, maxlen=None, test_split=0.2,
              seed=113, start_char=1, oov_char=2, index_from=3):
    """Load the 11,228 Reuters newswires labelled over 46 topics.

    Returns `(x_train, y_train), (x_test, y_test)`: object arrays of lists of word ids and
    int64 labels, exactly as Keras returns them. The data are shuffled with `seed`; each
    sequence starts with `start_char`; word ids are shifted by `index_from`; sequences of
    `maxlen` or more words are dropped; ids outside [skip_top, num_words) become
    `oov_char` (or are removed when it is None); the last `test_split` part is the test set.

    `path`: the file name, looked up in $FASTLSTM_DATA_DIR, the Keras cache, fastlstm's
    cache, else downloaded (sha256-checked); or a path to the file or to its folder.
    """
    if not 0.0 <= test_split <= 1.0:
        raise ValueError(f"test_split must be in [0, 1], got {test_split}")
    f = load_npz(find_file(path, "reuters.npz", ORIGIN + "reuters.npz", NPZ_SHA256))
    [(xs, labels)] = prepare([(f["x"], f["y"])], num_words, skip_top, maxlen, seed,
                             start_char, oov_char, index_from)
    idx = int(len(xs) * (1 - test_split))
    x_train, y_train = np.array(xs[:idx], dtype="object"), labels[:idx]
    x_test, y_test = np.array(xs[idx:], dtype="object"), labels[idx:]
    return (x_train, y_train), (x_test, y_test)


def get_word_index(path="reuters_word_index.json"):
    """Dict word -> index (1 = most frequent). Data ids are these plus `index_from` (3)."""
    p = find_file(path, "reuters_word_index.json", ORIGIN + "reuters_word_index.json",
                  WORD_INDEX_SHA256)
    with open(p) as f:
        return json.load(f)


def get_label_names():
    """The 46 topic names; label k is `get_label_names()[k]`."""
    return LABEL_NAMES
