import os

# Keras (the reference in some tests) runs on the torch backend: textbook dense Adam, CPU.
os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np
import pytest

import fastlstm

from fastlstm.datasets import _files, reuters


def find_data_dir():
    """The folder of a verified reuters.npz, found as the library finds it ($FASTLSTM_DATA_DIR,
    the Keras cache, fastlstm's cache), never downloaded; None when there is none."""
    found = _files.find_local("reuters.npz", reuters.NPZ_SHA256)
    return None if found is None else found.parent


@pytest.fixture(scope="session")
def data_dir():
    """The real Reuters files. Missing data fails the test (CI sets FASTLSTM_DATA_DIR)."""
    d = find_data_dir()
    assert d is not None, ("Reuters data not found: set FASTLSTM_DATA_DIR to a folder holding "
                           "reuters.npz, or put it in ~/.keras/datasets")
    return d


@pytest.fixture(autouse=True)
def fresh_names():
    """Default layer names start over in every test (lstm, lstm_1, ...), as Keras's own tests
    call clear_session."""
    fastlstm.backend.clear_session(free_memory=False)


@pytest.fixture
def serve_downloads(monkeypatch):
    """`serve(data)`: every download fastlstm makes gets the bytes `data` (in two reads), a
    local stand-in for the network; returns the list of URLs asked for."""
    urls = []

    def serve(data):
        class Response:
            headers = {"Content-Length": str(len(data))}

            def __init__(self):
                self.chunks = [data[:len(data) // 2], data[len(data) // 2:], b""]

            def read(self, n):
                return self.chunks.pop(0)

            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

        def urlopen(url, timeout):
            urls.append(url)
            return Response()

        monkeypatch.setattr(_files.urllib.request, "urlopen", urlopen)
        return urls

    return serve


@pytest.fixture
def threads():
    """Restores the kernels' thread count after a test that changes it."""
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
