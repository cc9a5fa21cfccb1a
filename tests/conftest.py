import os

# Keras (the reference in some tests) runs on the torch backend: textbook dense Adam, CPU.
os.environ.setdefault("KERAS_BACKEND", "torch")
import pathlib

import numpy as np
import pytest

import fastlstm

DATA_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    """The real Reuters files: FASTLSTM_DATA_DIR, else ../shared/data beside the checkout."""
    d = pathlib.Path(os.environ.get("FASTLSTM_DATA_DIR", DATA_DIR))
    assert (d / "reuters.npz").is_file(), f"Reuters data not found in {d}; set FASTLSTM_DATA_DIR"
    return d


@pytest.fixture
def threads():
    """Restores the kernels' thread count after a test that changes it."""
    n = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
