"""Reuters loading and preprocessing: golden facts of Keras's files (sizes, first rows,
labels) and Keras itself."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlstm.datasets import reuters
from fastlstm.preprocessing import pad_sequences, to_categorical


def test_golden_facts(data_dir):
    (x_train, y_train), (x_test, y_test) = reuters.load_data()
    assert len(x_train) == len(y_train) == 8982 and len(x_test) == len(y_test) == 2246
    assert list(y_train[:10]) == [3, 4, 3, 4, 4, 4, 4, 3, 3, 16]
    assert x_train[0][:20] == [1, 27595, 28842, 8, 43, 10, 447, 5, 25, 207, 270, 5, 3095, 111, 16, 369, 186, 90, 67, 7]
    assert y_train.dtype == np.int64 and x_train.dtype == object


@pytest.mark.keras
def test_word_index_and_labels(data_dir):
    index = reuters.get_word_index()
    assert len(index) == 30979 and sorted(index.values()) == list(range(1, 30980))
    by_id = {v: k for k, v in index.items()}
    assert [by_id[k] for k in range(1, 11)] == ["the", "of", "to", "in", "said", "and", "a", "mln", "3", "for"]
    from keras.datasets import reuters as keras_reuters

    names = list(keras_reuters.get_label_names())
    assert list(reuters.get_label_names()) == names and len(names) == 46


@pytest.mark.parametrize("kwargs", [
    {},
    {"num_words": 1000},
    {"num_words": 1000, "skip_top": 20},
    {"maxlen": 100},
    {"num_words": 500, "maxlen": 50, "test_split": 0.5, "seed": 7},
    {"start_char": None},
    {"start_char": None, "index_from": 0},
    {"oov_char": None, "num_words": 300},
    {"index_from": 5, "oov_char": 3, "num_words": 2000, "skip_top": 2},
    {"test_split": 0.0},
    {"test_split": 1.0},
])
@pytest.mark.keras
def test_load_data_matches_keras(data_dir, kwargs, monkeypatch):
    import keras.src.datasets.reuters as keras_reuters

    # Keras's own loader, reading the local file instead of downloading it
    monkeypatch.setattr(keras_reuters, "get_file", lambda fname, origin, file_hash: str(data_dir / fname))
    want = keras_reuters.load_data(**kwargs)
    got = reuters.load_data(**kwargs)
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == wx.dtype and gx.shape == wx.shape
        assert [list(s) for s in gx] == [list(s) for s in wx]
        np.testing.assert_array_equal(gy, wy)
        assert gy.dtype == wy.dtype


@pytest.mark.keras
def test_origin_and_hashes_are_keras(data_dir, monkeypatch):
    """Keras asks get_file for the files fastlstm verifies: the same URLs, the npz's sha256;
    for the word index Keras gives an md5, which fastlstm's sha256-verified copy matches."""
    import keras.src.datasets.reuters as keras_reuters

    from fastlstm.datasets import _files

    asked = {}

    def get_file(fname, origin, file_hash):
        asked[fname] = (origin, file_hash)
        return str(data_dir / fname)

    monkeypatch.setattr(keras_reuters, "get_file", get_file)
    keras_reuters.load_data()
    keras_reuters.get_word_index()
    assert asked["reuters.npz"] == (reuters.ORIGIN + "reuters.npz", reuters.NPZ_SHA256)
    origin, md5 = asked["reuters_word_index.json"]
    assert origin == reuters.ORIGIN + "reuters_word_index.json"
    index_file = _files.find_local("reuters_word_index.json", reuters.WORD_INDEX_SHA256)
    assert _files.file_digest(index_file, "md5") == md5


def test_explicit_path_and_corrupt_file(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("FASTLSTM_DATA_DIR")
    (x, _), _ = reuters.load_data(path=data_dir)  # a folder
    assert len(x) == 8982
    bad = tmp_path / "reuters.npz"
    bad.write_bytes((data_dir / "reuters.npz").read_bytes()[:100_000])
    with pytest.raises(ValueError, match="corrupt or not the expected file"):
        reuters.load_data(path=bad)
    monkeypatch.setenv("FASTLSTM_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        reuters.load_data()


@pytest.mark.keras
@settings(max_examples=150, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(-5, 50), max_size=12), max_size=8),
    maxlen=st.one_of(st.none(), st.integers(1, 15)),
    padding=st.sampled_from(["pre", "post"]),
    truncating=st.sampled_from(["pre", "post"]),
    value=st.sampled_from([0, -1, 3.5]),
    dtype=st.sampled_from(["int32", "int64", "float32"]),
)
def test_pad_sequences_matches_keras(seqs, maxlen, padding, truncating, value, dtype):
    import keras

    if maxlen is None and not seqs:
        return  # Keras takes np.max of no lengths
    want = keras.utils.pad_sequences(seqs, maxlen=maxlen, dtype=dtype, padding=padding,
                                     truncating=truncating, value=value)
    got = pad_sequences(seqs, maxlen=maxlen, dtype=dtype, padding=padding, truncating=truncating, value=value)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_pad_sequences_defaults_and_errors():
    out = pad_sequences([[1, 2, 3], [4], []], maxlen=2)
    np.testing.assert_array_equal(out, [[2, 3], [0, 4], [0, 0]])
    assert out.dtype == np.int32
    with pytest.raises(ValueError, match="Padding type"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="Truncating type"):
        pad_sequences([[1]], truncating="middle")
    with pytest.raises(ValueError, match="list of iterables"):
        pad_sequences([1, 2])
    with pytest.raises(ValueError, match="maxlen"):
        pad_sequences([[1]], maxlen=-1)


@pytest.mark.keras
@settings(max_examples=50, deadline=None)
@given(labels=st.lists(st.integers(0, 9), min_size=1, max_size=20), extra=st.integers(0, 3))
def test_to_categorical_matches_keras(labels, extra):
    import keras

    for num_classes in (None, max(labels) + 1 + extra):
        want = keras.utils.to_categorical(labels, num_classes)
        got = to_categorical(labels, num_classes)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(to_categorical(np.array(labels)[:, None]), keras.utils.to_categorical(np.array(labels)[:, None]))


def test_to_categorical_rejects_bad_labels():
    for bad, message in [([0, 1.5], "whole numbers"), ([0, np.nan], "whole numbers"), ([0, 5], r"\[0, 3\)"), ([-1, 1], r"\[0, 3\)")]:
        with pytest.raises(ValueError, match=message):
            to_categorical(bad, 3)


def same_outcome_as_keras(ours, theirs, make_args):
    """`ours(*args, **kwargs)` returns what Keras's returns (dtype, shape, values), or raises
    the same exception type; `make_args()` builds fresh arguments for each call."""
    args, kwargs = make_args()
    try:
        want = theirs(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any Keras error type is the reference
        args, kwargs = make_args()
        with pytest.raises(type(e)):
            ours(*args, **kwargs)
        return
    args, kwargs = make_args()
    got = ours(*args, **kwargs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def object_array(lists):
    out = np.empty(len(lists), dtype=object)
    out[:] = lists
    return out


@pytest.mark.keras
@pytest.mark.parametrize("make_args", [
    lambda: ((object_array([[1, 2, 3], [4], [5, 6]]),), {"maxlen": 2}),  # as load_data returns
    lambda: ((np.arange(12).reshape(3, 4),), {"maxlen": 6, "padding": "post"}),
    lambda: (([(1, 2), (3,)],), {}),
    lambda: (([np.array([1, 2], np.int64), np.array([7])],), {"dtype": "float16"}),
    lambda: (([[[1, 2], [3, 4]], [[5, 6]]],), {"maxlen": 3}),  # samples of shape (2,)
    lambda: (([[[1, 2], [3, 4]], [[5, 6]]],), {"maxlen": 1, "truncating": "post", "padding": "post"}),
    lambda: (([[[1, 2], [3, 4]], [[5, 6, 7]]],), {}),  # inconsistent sample shapes
    lambda: (([["a", "b"], ["c"]],), {"dtype": object, "value": "pad"}),
    lambda: (([["ab", "b"], ["c"]],), {"dtype": "<U3", "value": "p"}),
    lambda: (([[1]],), {"value": "x"}),  # a string value needs dtype=object
    lambda: (((s for s in [[1]]),), {}),  # no len()
    lambda: (([[1], None],), {}),
    lambda: (([[1.7, -2.2, 3.5]],), {"dtype": "int32"}),
    lambda: (([[1.5], []],), {"value": np.nan, "dtype": "float32", "maxlen": 3}),
    lambda: (([[1, 2]],), {"maxlen": 3.0}),
    lambda: (([[1, 2]],), {"maxlen": np.int64(3)}),
    lambda: (([[1, 2]],), {"maxlen": -1}),
    lambda: (([[1, 2]],), {"maxlen": 0, "truncating": "post"}),
    lambda: (([[300]],), {"dtype": "int8"}),
    lambda: (([],), {"maxlen": 3}),
    lambda: (([[]],), {}),
    lambda: (([[1, 2, 3]],), {"maxlen": 2, "truncating": "post", "padding": "middle"}),
])
def test_pad_sequences_edge_cases_match_keras(make_args):
    import keras

    same_outcome_as_keras(pad_sequences, keras.utils.pad_sequences, make_args)


@pytest.mark.keras
@pytest.mark.parametrize("make_args", [
    lambda: ((3,), {}),
    lambda: ((np.array(3), 5), {}),
    lambda: ((np.array([[1, 2], [0, 1]]),), {}),
    lambda: ((np.zeros((2, 3, 1), int), 4), {}),
    lambda: (([[1], [2]], 4), {}),
    lambda: ((np.array(["1", "2"]),), {}),
    lambda: ((np.array([1, 2], dtype=object),), {}),
    lambda: (([True, False],), {}),
    lambda: (([0.0, 2.0],), {}),
    lambda: ((np.array([1, 2], np.uint8),), {}),
    lambda: (([], 3), {}),
    lambda: (([1, 2], 0), {}),
    lambda: (([1, 2], 3.0), {}),
    lambda: ((), {"x": [0, 1], "num_classes": 2}),
])
def test_to_categorical_edge_cases_match_keras(make_args):
    import keras

    same_outcome_as_keras(to_categorical, keras.utils.to_categorical, make_args)


def test_to_categorical_strictness_beyond_keras():
    """Where Keras gives a silent wrong answer or numpy's error, fastlstm a ValueError:
    fractions (Keras truncates), negative labels (Keras sets the last class), non-digits."""
    for bad in ([0, 1.5], [-1, 1], np.array(["1", "b"]), np.array([1, None], dtype=object)):
        with pytest.raises(ValueError, match="labels must be"):
            to_categorical(bad, 3)
    assert to_categorical([], None).shape == (0, 0)  # Keras: np.max of nothing fails
