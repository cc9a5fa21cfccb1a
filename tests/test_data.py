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
