"""datasets.imdb against Keras's own loader, on small files in the IMDB format that the tests
write (the real files are not reachable here): Keras reads them through its `get_file`,
fastlstm through its lookup ($KERAS_HOME's cache) with the hashes set to the small files'."""
import json
import warnings

import numpy as np
import pytest

from fastlstm.datasets import _files, imdb


def reviews(rng, n, min_len, vocab=200):
    """Object array of n reviews: lists of word ranks 1..vocab-1, min_len to 29 words."""
    out = np.empty(n, dtype=object)
    out[:] = [[int(w) for w in rng.integers(1, vocab, size=rng.integers(min_len, 30))] for _ in range(n)]
    return out


def write_imdb(folder, seed=0, y_dtypes=("int64", "int64")):
    """imdb.npz (60 training reviews of 1+ words, 40 test reviews of 5+) and
    imdb_word_index.json in `folder`; returns the two paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    npz, index = folder / "imdb.npz", folder / "imdb_word_index.json"
    np.savez(npz, x_train=reviews(rng, 60, 1), y_train=rng.integers(0, 2, 60).astype(y_dtypes[0]),
             x_test=reviews(rng, 40, 5), y_test=rng.integers(0, 2, 40).astype(y_dtypes[1]))
    index.write_text(json.dumps({f"word{k}": k for k in rng.permutation(np.arange(1, 200)).tolist()}))
    return npz, index


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A fake $KERAS_HOME; no real cache or data folder is consulted and nothing is downloaded."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("FASTLSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, timeout):
        raise OSError(f"no network in tests ({url})")

    monkeypatch.setattr(_files.urllib.request, "urlopen", no_network)
    return home


def trust(monkeypatch, npz, index):
    """fastlstm accepts these small files (their hashes in place of Keras's)."""
    monkeypatch.setattr(imdb, "NPZ_SHA256", _files.sha256(npz))
    monkeypatch.setattr(imdb, "WORD_INDEX_MD5", _files.file_digest(index, "md5"))


def keras_imdb_reading(home, monkeypatch):
    """Keras's imdb module, its `get_file` resolving names in `home` as it does (no hash:
    with Keras's it would download the real file over the small one). Returns the module
    and a dict fname -> (origin, file_hash) of what Keras asked for."""
    import keras.src.datasets.imdb as keras_imdb
    from keras.src.utils.file_utils import get_file

    asked = {}

    def local_get_file(fname, origin, file_hash):
        asked[fname] = (origin, file_hash)
        return get_file(fname, origin, cache_dir=str(home))

    monkeypatch.setattr(keras_imdb, "get_file", local_get_file)
    return keras_imdb, asked


def assert_same(got, want):
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == wx.dtype and gx.shape == wx.shape
        assert [list(s) for s in gx] == [list(s) for s in wx]
        assert gy.dtype == wy.dtype
        np.testing.assert_array_equal(gy, wy)


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", [
    {},
    {"num_words": 50},
    {"num_words": 50, "skip_top": 10},
    {"maxlen": 12},
    {"maxlen": 20, "num_words": 120, "seed": 7},
    {"seed": 0},
    {"start_char": None},
    {"start_char": None, "index_from": 0},
    {"start_char": 0, "oov_char": 1},
    {"oov_char": None, "num_words": 80},
    {"oov_char": None, "num_words": 80, "skip_top": 30, "maxlen": 25},
    {"index_from": 5, "oov_char": 3, "num_words": 100, "skip_top": 2},
    {"num_words": 0},
])
def test_load_data_matches_keras(keras_home, monkeypatch, kwargs):
    npz, index = write_imdb(keras_home / "datasets")
    trust(monkeypatch, npz, index)
    keras_imdb, _ = keras_imdb_reading(keras_home, monkeypatch)
    got = imdb.load_data(**kwargs)
    assert_same(got, keras_imdb.load_data(**kwargs))
    (x_train, _), (x_test, _) = got
    assert len(x_train) <= 60 and len(x_test) <= 40 and x_train.dtype == object


@pytest.mark.keras
def test_label_dtypes_and_word_index_match_keras(keras_home, monkeypatch):
    """Labels of two dtypes come back in one (Keras concatenates them); word index equal."""
    npz, index = write_imdb(keras_home / "datasets", seed=3, y_dtypes=("uint8", "int32"))
    trust(monkeypatch, npz, index)
    keras_imdb, _ = keras_imdb_reading(keras_home, monkeypatch)
    got = imdb.load_data(num_words=60, maxlen=15)
    assert_same(got, keras_imdb.load_data(num_words=60, maxlen=15))
    assert got[0][1].dtype == got[1][1].dtype == np.int32
    assert imdb.get_word_index() == keras_imdb.get_word_index() and len(imdb.get_word_index()) == 199


@pytest.mark.keras
def test_a_set_left_empty_by_maxlen_is_the_same_error(keras_home, monkeypatch):
    npz, index = write_imdb(keras_home / "datasets")  # test reviews have 5+ words: 6+ ids
    trust(monkeypatch, npz, index)
    keras_imdb, _ = keras_imdb_reading(keras_home, monkeypatch)
    for loader in (keras_imdb.load_data, imdb.load_data):
        with pytest.raises(ValueError, match="maxlen=5, no sequence was kept"):
            loader(maxlen=5)


@pytest.mark.keras
def test_unknown_arguments_are_ignored_as_keras_does_with_a_warning(keras_home, monkeypatch):
    npz, index = write_imdb(keras_home / "datasets")
    trust(monkeypatch, npz, index)
    keras_imdb, _ = keras_imdb_reading(keras_home, monkeypatch)
    with pytest.warns(UserWarning, match=r"ignores the arguments \['nb_words', 'test_split'\]"):
        got = imdb.load_data(num_words=40, test_split=0.5, nb_words=10)
    assert_same(got, keras_imdb.load_data(num_words=40, test_split=0.5, nb_words=10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imdb.load_data()


@pytest.mark.keras
def test_origin_and_hashes_are_keras(keras_home, monkeypatch):
    """The URLs and hashes Keras's loader passes to get_file are fastlstm's; the small files
    fail them: a sha256 mismatch for the arrays, an md5 mismatch for the word index."""
    write_imdb(keras_home / "datasets")
    keras_imdb, asked = keras_imdb_reading(keras_home, monkeypatch)
    keras_imdb.load_data()
    keras_imdb.get_word_index()
    assert asked == {"imdb.npz": (imdb.ORIGIN + "imdb.npz", imdb.NPZ_SHA256),
                     "imdb_word_index.json": (imdb.ORIGIN + "imdb_word_index.json", imdb.WORD_INDEX_MD5)}
    with pytest.raises(ValueError, match="corrupt or not the expected file: sha256"):
        imdb.load_data()
    with pytest.raises(ValueError, match="corrupt or not the expected file: md5"):
        imdb.get_word_index()


def test_path_is_a_file_name_in_the_caches_or_a_path(keras_home, monkeypatch, tmp_path):
    """Keras's meaning of `path` (a name in the Keras cache, else downloaded under it) and
    fastlstm's extension (a file or a folder); a missing file named by a path is an error."""
    npz, index = write_imdb(keras_home / "datasets")
    trust(monkeypatch, npz, index)
    (want, _), _ = imdb.load_data()
    renamed = npz.rename(npz.with_name("small.npz"))
    (by_name, _), _ = imdb.load_data(path="small.npz")
    (by_file, _), _ = imdb.load_data(path=renamed)
    assert [list(s) for s in by_name] == [list(s) for s in by_file] == [list(s) for s in want]
    folder = tmp_path / "folder"
    write_imdb(folder)
    (in_folder, _), _ = imdb.load_data(path=folder)
    assert [list(s) for s in in_folder] == [list(s) for s in want]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imdb.load_data(path=tmp_path / "nowhere" / "imdb.npz")
    with pytest.raises(OSError, match="downloading it from .*imdb.npz failed"):
        imdb.load_data()  # moved away: not in any cache, and the download fails


def test_a_missing_file_is_downloaded_from_keras_origin_into_fastlstm_cache(keras_home, monkeypatch, tmp_path,
                                                                            serve_downloads):
    npz, index = write_imdb(tmp_path / "served")
    trust(monkeypatch, npz, index)
    served = npz.read_bytes()
    urls = serve_downloads(served)
    (x, _), _ = imdb.load_data(path=npz.parent)  # the explicit path never downloads
    assert urls == []
    (y, _), _ = imdb.load_data()
    assert urls == ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"]
    assert (tmp_path / "cache" / "fastlstm" / "imdb.npz").read_bytes() == served
    assert [list(s) for s in x] == [list(s) for s in y]
