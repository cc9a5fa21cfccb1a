"""Keras's module layout: the import lines of the canonical programs run with `keras` replaced
by `fastlstm`, every name they use from Keras resolves, each helper is one object under all
its paths, and the signatures are Keras's."""
import ast
import importlib
import inspect

import pytest

import fastlstm

REUTERS_KERAS2 = """
from keras.datasets import reuters
from keras.preprocessing import sequence
from keras.utils import np_utils
from keras.models import Sequential
from keras.layers import Dense, Embedding, LSTM

(X_train, y_train), (X_test, y_test) = reuters.load_data(num_words=1000, test_split=0.2)
X_train = sequence.pad_sequences(X_train, maxlen=100)
X_test = sequence.pad_sequences(X_test, maxlen=100)
Y_train = np_utils.to_categorical(y_train)
Y_test = np_utils.to_categorical(y_test)
model = Sequential()
model.add(Embedding(1000, 100))
model.add(LSTM(100, activation="tanh"))
model.add(Dense(46, activation="softmax"))
"""

REUTERS_KERAS3 = """
import keras
from keras import layers
from keras.datasets import reuters
from keras.models import Sequential
from keras.layers import Bidirectional, Dense, Embedding, GRU, LSTM, Masking, SimpleRNN
from keras.utils import pad_sequences, set_random_seed, to_categorical

keras.utils.set_random_seed(1)
(x_train, y_train), (x_test, y_test) = keras.datasets.reuters.load_data(num_words=1000)
x_train = keras.utils.pad_sequences(x_train, maxlen=100)
y_train = keras.utils.to_categorical(y_train)
names = keras.datasets.reuters.get_label_names(), keras.datasets.reuters.get_word_index()
model = keras.models.Sequential([layers.Embedding(1000, 100), layers.LSTM(100), layers.Dense(46)])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
"""

# keras.io's "Bidirectional LSTM on IMDB" (Keras 3 form; the older one pads through
# keras.preprocessing.sequence).
IMDB_BIDIRECTIONAL = """
import numpy as np
import keras
from keras import layers

max_features = 20000
maxlen = 200
inputs = keras.Input(shape=(None,), dtype="int32")
x = layers.Embedding(max_features, 128)(inputs)
x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
x = layers.Bidirectional(layers.LSTM(64))(x)
outputs = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(inputs, outputs)
(x_train, y_train), (x_val, y_val) = keras.datasets.imdb.load_data(num_words=max_features)
x_train = keras.utils.pad_sequences(x_train, maxlen=maxlen)
x_val = keras.preprocessing.sequence.pad_sequences(x_val, maxlen=maxlen)
word_index = keras.datasets.imdb.get_word_index()
"""

IMDB_KERAS2 = """
from keras.datasets import imdb
from keras.preprocessing import sequence
from keras.preprocessing.sequence import pad_sequences
from keras.utils.np_utils import to_categorical
from keras.models import Sequential
from keras.layers import Dense, Embedding, LSTM

(x_train, y_train), (x_test, y_test) = imdb.load_data(num_words=5000, skip_top=20, maxlen=400)
x_train = sequence.pad_sequences(x_train, maxlen=400)
"""

PROGRAMS = {"reuters_keras2": REUTERS_KERAS2, "reuters_keras3": REUTERS_KERAS3,
            "imdb_bidirectional": IMDB_BIDIRECTIONAL, "imdb_keras2": IMDB_KERAS2}
KERAS3_PROGRAMS = ("reuters_keras3", "imdb_bidirectional")
def with_fastlstm(tree):
    """The import statements of `tree`, `keras` replaced by `fastlstm` (`import keras` becomes
    `import fastlstm as keras`, so the program's names stay)."""
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "keras":
            imports.append(ast.ImportFrom("fastlstm" + node.module[5:], node.names, 0))
        elif isinstance(node, ast.Import):
            aliases = []
            for a in node.names:
                if a.name.split(".")[0] == "keras":
                    assert a.asname or a.name == "keras", "add `import keras.x` rewriting"
                    aliases.append(ast.alias("fastlstm" + a.name[5:], a.asname or "keras"))
                else:
                    aliases.append(a)
            imports.append(ast.Import(aliases))
    return imports


def run_imports(imports):
    namespace = {}
    exec(compile(ast.fix_missing_locations(ast.Module(imports, [])), "<imports>", "exec"), namespace)
    return namespace


def attribute_chains(tree, roots):
    """Dotted names used in `tree` that start at one of `roots` (`keras.utils.pad_sequences`)."""
    chains = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id in roots:
            chains.add(".".join([node.id, *reversed(parts)]))
    return chains


def resolve(namespace, chain):
    root, *attrs = chain.split(".")
    obj = namespace[root]
    for a in attrs:
        obj = getattr(obj, a)
    return obj


def imported_names(imports):
    return {a.asname or a.name for node in imports for a in node.names}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_canonical_programs_import_and_resolve_with_fastlstm(name):
    tree = ast.parse(PROGRAMS[name])
    imports = with_fastlstm(tree)
    namespace = run_imports(imports)
    chains = attribute_chains(tree, imported_names(imports) - {"np"})
    assert chains, "the program uses names from keras"
    for chain in sorted(chains):
        assert callable(resolve(namespace, chain)) or inspect.ismodule(resolve(namespace, chain)), chain
    for bound in imported_names(imports) - {"np"}:
        obj = namespace[bound]
        assert (obj.__name__ if inspect.ismodule(obj) else obj.__module__).startswith("fastlstm"), bound


@pytest.mark.keras
@pytest.mark.parametrize("name", KERAS3_PROGRAMS)
def test_keras3_programs_are_keras3(name):
    """The Keras 3 spellings above are real Keras 3: every import and name resolves there."""
    tree = ast.parse(PROGRAMS[name])
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace = run_imports(imports)
    for chain in attribute_chains(tree, imported_names(imports) - {"np"}):
        resolve(namespace, chain)


def test_each_helper_is_one_object_under_every_path():
    from fastlstm import preprocessing, utils
    from fastlstm.preprocessing import sequence
    from fastlstm.utils import np_utils, numerical_utils, rng_utils, sequence_utils

    assert (utils.pad_sequences is sequence_utils.pad_sequences is sequence.pad_sequences
            is preprocessing.pad_sequences is fastlstm.preprocessing.sequence.pad_sequences)
    assert (utils.to_categorical is numerical_utils.to_categorical is np_utils.to_categorical
            is preprocessing.to_categorical)
    assert utils.set_random_seed is rng_utils.set_random_seed and utils.rng is rng_utils.rng
    assert fastlstm.datasets.imdb is importlib.import_module("fastlstm.datasets.imdb")
    assert fastlstm.datasets.reuters is importlib.import_module("fastlstm.datasets.reuters")
    assert fastlstm.Sequential is fastlstm.models.Sequential


def public(module):
    return {n for n in dir(module) if not n.startswith("_")}


@pytest.mark.keras
def test_preprocessing_has_what_keras3_has():
    """keras.preprocessing.sequence holds pad_sequences only; there is no preprocessing.text
    (Keras 2's Tokenizer) in Keras 3, and none in fastlstm; Keras 3 has no utils.np_utils
    (fastlstm keeps it for Keras 2 scripts)."""
    import keras

    assert public(fastlstm.preprocessing.sequence) == public(keras.preprocessing.sequence) == {"pad_sequences"}
    assert public(fastlstm.preprocessing) - {"pad_sequences", "to_categorical"} <= public(keras.preprocessing)
    for package in ("keras", "fastlstm"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"{package}.preprocessing.text")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("keras.utils.np_utils")


@pytest.mark.keras
@pytest.mark.parametrize("path", [
    "datasets.imdb.load_data", "datasets.imdb.get_word_index", "datasets.reuters.load_data",
    "datasets.reuters.get_word_index", "datasets.reuters.get_label_names",
    "utils.pad_sequences", "utils.to_categorical", "utils.set_random_seed",
    "preprocessing.sequence.pad_sequences",
])
def test_signatures_are_keras(path):
    import keras

    ours, theirs = resolve({"k": fastlstm}, "k." + path), resolve({"k": keras}, "k." + path)
    assert inspect.signature(ours) == inspect.signature(theirs)
